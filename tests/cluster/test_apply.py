"""What we ship, applied to the real API server (server-side dry-run, then for real)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client, config

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


def test_a_real_apply_leaves_no_namespace_it_created(cluster: Layout, tmp_path: Path) -> None:
    """A checked target's namespace goes with its objects; one that was there before stays."""
    api = client.CoreV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    api.create_namespace({"metadata": {"name": "apply-check-was-there"}})
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text("resources: [a.yaml, b.yaml]\n")
    for name, namespace in (("a", "apply-check-made-here"), ("b", "apply-check-was-there")):
        (overlay / f"{name}.yaml").write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": namespace},
                    "data": {"k": "v"},
                }
            )
        )
    try:
        assert check_target(cluster, overlay, dry_run_only=False, keep=False) == []
        made = api.list_namespace(field_selector="metadata.name=apply-check-made-here").items
        assert all(ns.metadata.deletion_timestamp for ns in made)  # gone or going
        kept = api.read_namespace("apply-check-was-there")
        assert kept.metadata.deletion_timestamp is None
    finally:
        api.delete_namespace("apply-check-was-there")
