"""The staging canary judged by the real Argo Rollouts controller on the local cluster.

Each scenario runs in its own namespace, all at once (the controller handles them side by side,
as it would several apps), so the five take about as long as one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from scripts.cluster.canary import (
    Canary,
    CanaryError,
    CanaryResult,
    Options,
    client_service,
    rollout_of,
    scale_time,
)
from scripts.cluster.control_plane import Layout
from scripts.manifests.render import render_overlay
from scripts.rehearsal.canary import Outcome

REPO = Path(__file__).resolve().parents[2]
STAGING = REPO / "apps/digits-classifier/overlays/staging"


def test_time_scaling_divides_pauses_and_intervals_only() -> None:
    objects = render_overlay(STAGING)
    scale_time(objects, 60)
    steps = rollout_of(objects)["spec"]["strategy"]["canary"]["steps"]
    assert [s["pause"]["duration"] for s in steps if "pause" in s] == ["2s", "5s"]
    template = next(o for o in objects if o["metadata"]["name"].endswith("success-rate"))
    metric = template["spec"]["metrics"][0]
    assert metric["interval"] == "1s"
    assert "[5m]" in metric["provider"]["prometheus"]["query"]  # PromQL windows untouched


def test_the_client_service_spans_both_replica_sets() -> None:
    objects = render_overlay(STAGING)
    assert client_service(objects, rollout_of(objects)) == "digits-classifier-server"
    without = [
        o
        for o in objects
        if (o["kind"], o["metadata"]["name"]) != ("Service", "digits-classifier-server")
    ]
    with pytest.raises(CanaryError, match="no client Service"):
        client_service(without, rollout_of(without))


SCENARIOS: dict[str, dict[str, Any]] = {
    "healthy": {"faults": {}},
    "errors-10pct": {"faults": {"FAULT_ERROR_RATE": "0.1"}},
    "degraded-model": {"faults": {"FAULT_DEGRADE": "shuffle"}},
    "no-traffic": {"faults": {}, "rps": 0.0},
    "first-deploy": {"faults": {}, "first_deploy_only": True},
    # the second model of models.yaml: its own app, and load from its own test split
    "breast-cancer-healthy": {"faults": {}, "model": "breast-cancer", "app": "breast-cancer"},
}


@pytest.fixture(scope="module")
def canary_results(cluster: Layout, pipeline_workspace: Path) -> dict[str, CanaryResult]:
    def run(name: str) -> CanaryResult:
        spec = SCENARIOS[name]
        folder = pipeline_workspace / "models" / spec.get("model", "digits")
        options = Options(
            overlay=REPO / "apps" / spec.get("app", "digits-classifier") / "overlays/staging",
            candidate_model=folder / "model.onnx",
            faults=spec["faults"],
            rps=spec.get("rps", 50.0),
            first_deploy_only=spec.get("first_deploy_only", False),
            timeout=300,
        )
        return Canary(options, say=lambda *args, **kwargs: None).run()

    with ThreadPoolExecutor(len(SCENARIOS)) as pool:
        return dict(zip(SCENARIOS, pool.map(run, SCENARIOS)))


@pytest.mark.e2e
def test_a_healthy_candidate_is_promoted(canary_results: dict[str, CanaryResult]) -> None:
    result = canary_results["healthy"]
    assert result.verdict.outcome == Outcome.PROMOTED, result.verdict.headline()
    assert len(result.runs) == 2  # both inline analyses ran and passed
    assert all(r["status"]["phase"] == "Successful" for r in result.runs)


@pytest.mark.e2e
def test_the_second_model_is_promoted_under_its_own_load(
    canary_results: dict[str, CanaryResult],
) -> None:
    result = canary_results["breast-cancer-healthy"]
    assert result.verdict.outcome == Outcome.PROMOTED, result.verdict.headline()
    assert result.namespace.startswith("breast-cancer-staging")
    assert sum(result.requests.values()) > 0


@pytest.mark.e2e
def test_ten_percent_errors_abort_at_the_first_analysis(
    canary_results: dict[str, CanaryResult],
) -> None:
    verdict = canary_results["errors-10pct"].verdict
    assert verdict.outcome == Outcome.ABORTED and verdict.step == 2
    assert verdict.metric.startswith(("error-rate", "success-rate"))


@pytest.mark.e2e
def test_a_degraded_model_is_aborted_by_model_quality(
    canary_results: dict[str, CanaryResult],
) -> None:
    verdict = canary_results["degraded-model"].verdict
    assert verdict.outcome == Outcome.ABORTED
    assert verdict.metric in ("class-shift-vs-stable", "confidence-vs-stable")


@pytest.mark.e2e
def test_no_traffic_pauses_for_a_human(canary_results: dict[str, CanaryResult]) -> None:
    verdict = canary_results["no-traffic"].verdict
    assert verdict.outcome == Outcome.PAUSED and verdict.step == 2, verdict.headline()


@pytest.mark.e2e
def test_a_first_deploy_is_promoted_without_analysis(
    canary_results: dict[str, CanaryResult],
) -> None:
    result = canary_results["first-deploy"]
    assert result.verdict.outcome == Outcome.PROMOTED
    assert result.runs == []
    assert "without analysis" in result.first_deploy
