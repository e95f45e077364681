"""What we ship, applied to the real API server (server-side dry-run, then for real)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.cluster.apply_check import check_target
from scripts.cluster.control_plane import Layout
from scripts.manifests.render import discover_targets

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("target", discover_targets(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_target_is_accepted_by_the_api_server(cluster: Layout, target: Path) -> None:
    refusals = check_target(cluster, target, dry_run_only=False, keep=False)
    assert not refusals, "\n".join(str(r) for r in refusals)


def test_a_refusal_names_the_source_file_and_the_field(cluster: Layout, tmp_path: Path) -> None:
    """An integer field given a fraction: the schema check of the API server itself refuses it,
    and the refusal points at the file to edit."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [pdb.yaml]\nnamespace: apply-check-corpus\n"
    )
    (overlay / "pdb.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "broken"},
                "spec": {"minAvailable": "many", "selector": {"matchLabels": {"a": "b"}}},
            }
        )
    )
    (refusal,) = check_target(cluster, overlay, dry_run_only=True, keep=False)
    assert refusal.obj == "PodDisruptionBudget apply-check-corpus/broken"
    assert refusal.source.endswith("pdb.yaml")
    assert "spec.minAvailable" in refusal.message
