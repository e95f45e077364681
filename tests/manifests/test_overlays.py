"""Every overlay and cluster renders and validates; overlays differ where they should; the Rollout
transformer configuration really rewrites references; pykustomize agrees with kubectl."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.manifests import (
    analysis_refs,
    render_overlay,
    render_with_kubectl,
    resolve_static_args,
)
from ml.catalog import load_catalog
from scripts.manifests.model import REPO_ROOT, Obj, TargetResult
from tests.manifests.conftest import only

OVERLAYS = ["dev", "staging", "production"]
APP = "apps/digits-classifier/overlays"
# every app of models.yaml has the three overlays
APPS = [f"apps/{e.app}/overlays" for e in load_catalog(REPO_ROOT / "models.yaml").entries]


def test_every_target_is_found(results: dict[str, TargetResult]) -> None:
    assert set(results) == {
        *(f"{app}/{env}" for app in APPS for env in OVERLAYS),
        "clusters/staging",
        "clusters/production",
    }


@pytest.mark.parametrize(
    "target",
    [*(f"{app}/{e}" for app in APPS for e in OVERLAYS), "clusters/staging", "clusters/production"],
)
def test_target_renders_and_validates(results: dict[str, TargetResult], target: str) -> None:
    result = results[target]
    assert result.objects, "rendered nothing"
    assert result.problems == [], "\n".join(map(str, result.problems))


def test_base_and_template_render_on_their_own() -> None:
    for path in ("apps/_shared/model-service", "apps/digits-classifier/base"):
        kinds = {o["kind"] for o in render_overlay(REPO_ROOT / path)}
        assert {"Rollout", "Service", "ServiceAccount", "HorizontalPodAutoscaler"} <= kinds
        assert {"PodDisruptionBudget", "NetworkPolicy", "PodMonitor", "PrometheusRule"} <= kinds
        assert "AnalysisTemplate" in kinds


def _rollout(rendered: dict[str, list[Obj]], env: str) -> Obj:
    return only(rendered[f"{APP}/{env}"], "Rollout")


@pytest.mark.parametrize("env", OVERLAYS)
def test_transformer_rewrites_image_configmap_and_template_refs(
    rendered: dict[str, list[Obj]], env: str
) -> None:
    objects = rendered[f"{APP}/{env}"]
    rollout = _rollout(rendered, env)
    container = rollout["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/mlops/digits-classifier:0.1.0"
    # the service's generated ConfigMap (the app also has the drift monitor's and the dashboard)
    (config,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap"
        and o["metadata"]["name"].startswith("digits-classifier-model-config-")
    ]
    assert container["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]
    assert config["data"]["DEPLOY_ENV"] == env
    assert config["data"]["HOST"] == "0.0.0.0"
    templates = {o["metadata"]["name"] for o in objects if o["kind"] == "AnalysisTemplate"}
    for ref in analysis_refs(rollout):
        assert {name for name, _ in ref.templates} <= templates
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["canaryService"] == "digits-classifier-server-canary"
    assert (
        rollout["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "digits-classifier"
    )
    hpa = only(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == rollout["metadata"]["name"]


def test_overlays_differ_where_they_should(rendered: dict[str, list[Obj]]) -> None:
    hpa = {e: only(rendered[f"{APP}/{e}"], "HorizontalPodAutoscaler")["spec"] for e in OVERLAYS}
    assert (
        hpa["dev"]["minReplicas"] < hpa["staging"]["minReplicas"] < hpa["production"]["minReplicas"]
    )
    limits = {
        e: _rollout(rendered, e)["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        for e in OVERLAYS
    }
    assert limits["dev"]["memory"] == "256Mi" and limits["production"]["memory"] == "1Gi"
    # the JSON patch changed resources only: probes and securityContext survive
    container = _rollout(rendered, "production")["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def _thresholds(rendered: dict[str, list[Obj]], env: str) -> dict[str, str | None]:
    rollout = _rollout(rendered, env)
    return resolve_static_args(rollout, analysis_refs(rollout)[0].args)


def test_production_is_stricter_and_gated(rendered: dict[str, list[Obj]]) -> None:
    staging, production = _thresholds(rendered, "staging"), _thresholds(rendered, "production")
    assert float(str(production["success-rate-min"])) > float(str(staging["success-rate-min"]))
    assert float(str(production["latency-p99-max-seconds"])) <= 0.1
    assert production["namespace"] == "digits-classifier-production"
    assert production["canary-hash"] is None  # only known in a cluster
    steps = _rollout(rendered, "production")["spec"]["strategy"]["canary"]["steps"]
    assert {"pause": {}} in steps, "production needs an indefinite pause (manual promotion)"
    gate = steps.index({"pause": {}})
    assert steps[gate + 1] == {"setWeight": 100}
    assert all(s != {"pause": {}} for e in ("dev", "staging") for s in _steps(rendered, e))


def _steps(rendered: dict[str, list[Obj]], env: str) -> list[Obj]:
    steps: list[Obj] = _rollout(rendered, env)["spec"]["strategy"]["canary"]["steps"]
    return steps


@pytest.mark.parametrize("env", OVERLAYS)
def test_canary_profile_shape(rendered: dict[str, list[Obj]], env: str) -> None:
    """10% -> pause -> analysis -> 50% -> pause -> analysis -> (gate) -> 100%."""
    shape = [next(iter(s)) for s in _steps(rendered, env)]
    expected = ["setWeight", "pause", "analysis", "setWeight", "pause", "analysis"]
    assert shape[:6] == expected and shape[-1] == "setWeight"
    weights = [s["setWeight"] for s in _steps(rendered, env) if "setWeight" in s]
    assert weights == [10, 50, 100]


def test_production_routes_through_istio(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[f"{APP}/production"]
    routing = _rollout(rendered, "production")["spec"]["strategy"]["canary"]["trafficRouting"]
    vs = only(objects, "VirtualService")
    assert routing["istio"]["virtualService"]["name"] == vs["metadata"]["name"]
    assert (
        only(objects, "DestinationRule")["metadata"]["name"]
        == routing["istio"]["destinationRule"]["name"]
    )
    assert not any(o["kind"] == "VirtualService" for o in rendered[f"{APP}/staging"])


def test_podmonitor_relabels_the_labels_analysis_selects_on(rendered: dict[str, list[Obj]]) -> None:
    monitor = only(rendered[f"{APP}/staging"], "PodMonitor")
    relabel = {
        r["targetLabel"]: r["sourceLabels"]
        for r in monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    }
    assert relabel["rollouts_pod_template_hash"] == [
        "__meta_kubernetes_pod_label_rollouts_pod_template_hash"
    ]
    assert relabel["namespace"] == ["__meta_kubernetes_namespace"]
    assert relabel["pod"] == ["__meta_kubernetes_pod_name"]


def test_kubectl_kustomize_agrees_with_pykustomize(rendered: dict[str, list[Obj]]) -> None:
    target = f"{APP}/production"
    assert render_with_kubectl(REPO_ROOT / target) == rendered[target]


def test_every_manifest_opens_with_a_comment(repo_root: Path) -> None:
    files = [
        p
        for folder in ("apps", "rollouts", "clusters")
        for p in (repo_root / folder).rglob("*.yaml")
    ]
    assert len(files) > 30
    missing = [str(p.relative_to(repo_root)) for p in files if not p.read_text().startswith("# ")]
    assert missing == []
    vague = [
        str(p.relative_to(repo_root)) for p in files if "need" not in p.read_text().splitlines()[0]
    ]
    assert vague == [], "first line must say what must exist first (needs ...)"


def test_rollouts_readme_snippet_runs(repo_root: Path) -> None:
    """The library example in rollouts/README.md works against the real overlay."""
    text = (repo_root / "rollouts" / "README.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, object] = {}
    exec(compile(snippet, "rollouts/README.md", "exec"), scope)  # noqa: S102 (our own README)
    assert scope["templates"] and scope["args"]
    args = scope["args"]
    assert isinstance(args, dict) and args["success-rate-min"] == "0.99"
