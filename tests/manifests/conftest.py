"""Fixtures for the desired-state tests: every target rendered and validated once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.manifests import metric_refs
from scripts.manifests.vocabulary import REPO_ROOT, Obj, TargetResult
from scripts.manifests.render import discover_targets
from scripts.manifests.validate import Checks, validate_all

CORPUS = Path(__file__).parent / "corpus"


@pytest.fixture(scope="session")
def contract_metrics() -> set[str]:
    """Metric names of docs/CONTRACTS.md as a text exposition (the live check is separate)."""
    return metric_refs.exported_metric_names(metric_refs.contract_exposition())


@pytest.fixture(scope="session")
def results(contract_metrics: set[str]) -> dict[str, TargetResult]:
    """Every overlay and cluster, rendered and validated once (promtool included)."""
    checks = Checks(contract_metrics, "docs/CONTRACTS.md")
    return {r.target: r for r in validate_all(discover_targets(), checks)}


@pytest.fixture(scope="session")
def rendered(results: dict[str, TargetResult]) -> dict[str, list[Obj]]:
    return {name: r.objects for name, r in results.items()}


def only(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    """The single object of a kind (and name) in a render."""
    found = [
        o
        for o in objects
        if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
