"""The platform the apps run on, as clusters/ wires it: pinned charts the table describes, written
once, that install every CRD and Service the apps use, in order; and the network paths the apps
need (Prometheus in, istiod out) really open under the default-deny policies."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import platform
from scripts.manifests import platform_wiring
from scripts.manifests.vocabulary import REPO_ROOT, Obj
from scripts.manifests.render import discover_targets, render_overlay
from tests.manifests.conftest import only

CLUSTERS = ("clusters/staging", "clusters/production")
OVERLAYS = [f"apps/digits-classifier/overlays/{env}" for env in ("dev", "staging", "production")]


def _charts(objects: list[Obj]) -> list[Obj]:
    return [
        o for o in objects if o.get("kind") == "Application" and o["spec"]["source"].get("chart")
    ]


# ---- the table and the charts in clusters/ ------------------------------------------------------


def test_every_chart_application_is_a_chart_the_table_describes(
    rendered: dict[str, list[Obj]],
) -> None:
    used = set()
    for cluster in CLUSTERS:
        for app in _charts(rendered[cluster]):
            source = app["spec"]["source"]
            item = platform.chart(source["chart"], str(source["targetRevision"]))
            assert item is not None, f"{cluster}: {source['chart']} {source['targetRevision']}"
            assert item.repo == source["repoURL"]
            used.add(item.ref)
    assert used == {c.ref for c in platform.CHARTS}, "a chart in CHARTS that no cluster uses"


@pytest.mark.parametrize("item", platform.CHARTS, ids=lambda c: c.ref)
def test_each_chart_ships_the_pinned_component_version(item: platform.Chart) -> None:
    component = platform.component(item.component)
    assert item.app_version.lstrip("v") == component.version.lstrip("v")
    assert item.ref in component.charts


def test_the_pins_the_issue_named() -> None:
    """Versions read from the charts' histories (docs/PLATFORM.md), so a bump is deliberate."""
    pins = {c.ref: c.app_version for c in platform.CHARTS}
    assert pins["argo-rollouts 2.40.5"] == "v1.8.3"
    assert pins["kube-prometheus-stack 75.15.1"] == "v0.83.0"
    assert pins["argo-workflows 0.47.5"] == "v3.7.11"
    version = tuple(int(x) for x in platform.component("argo-workflows").version[1:].split("."))
    assert version >= (3, 6, 0), "CronWorkflow spec.schedules needs Argo Workflows >= 3.6"


def test_platform_applications_are_written_once(repo_root: Path) -> None:
    """Flux's shape: clusters/_platform holds each platform Application, clusters patch the
    project; a cluster folder holds no chart Application of its own."""
    for cluster in CLUSTERS:
        for path in (repo_root / cluster).rglob("*.yaml"):
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "Application":
                    assert not doc["spec"]["source"].get("chart"), f"{path}: a copy"
    shared = repo_root / "clusters" / "_platform"
    staging = {o["metadata"]["name"]: o for o in _charts(render_overlay(repo_root / CLUSTERS[0]))}
    production = {
        o["metadata"]["name"]: o for o in _charts(render_overlay(repo_root / CLUSTERS[1]))
    }
    assert set(production) - set(staging) == {"istio-base", "istiod"}
    for name, app in staging.items():
        other = copy.deepcopy(production[name])
        other["spec"]["project"] = app["spec"]["project"]
        assert other == app, f"{name} differs beyond its project"
    assert {p.name for p in shared.iterdir()} >= {"kustomization.yaml", "istio"}
    assert all(t.name != "_platform" for t in discover_targets(repo_root))


def test_each_cluster_binds_the_platform_to_its_own_project(rendered: dict[str, list[Obj]]) -> None:
    for cluster in CLUSTERS:
        name = cluster.split("/")[1]
        for app in _charts(rendered[cluster]):
            assert app["spec"]["project"] == f"platform-{name}"


# ---- defect 2: the chart's kube-system objects ---------------------------------------------------


def test_platform_projects_allow_what_kube_prometheus_stack_writes(
    rendered: dict[str, list[Obj]],
) -> None:
    for cluster in CLUSTERS:
        objects = rendered[cluster]
        project = only(objects, "AppProject", f"platform-{cluster.split('/')[1]}")
        app = only(objects, "Application", "kube-prometheus-stack")
        found, _ = platform_wiring.releases([app])
        foreign = [f for f in found[0].chart.foreign if found[0].when(f.when)]
        assert {f.namespace for f in foreign} == {"kube-system"} and len(foreign) == 5
        namespaces = {d["namespace"] for d in project["spec"]["destinations"]}
        assert {"kube-system", "monitoring", "argo", "argo-rollouts", "argocd"} <= namespaces
        # and the rule sees it: without kube-system the cluster fails
        broken = copy.deepcopy(objects)
        only(broken, "AppProject", project["metadata"]["name"])["spec"]["destinations"] = [
            d for d in project["spec"]["destinations"] if d["namespace"] != "kube-system"
        ]
        rules = {
            f.message.split(":")[0] for f in platform_wiring.check_platform(broken, render_overlay)
        }
        assert rules == {"rule project-destinations"}


# ---- defect 3: Argo Workflows, Argo Server and Pushgateway installed ---------------------------


def test_the_apps_urls_reach_installed_services(rendered: dict[str, list[Obj]]) -> None:
    for cluster in CLUSTERS:
        found, problems = platform_wiring.releases(rendered[cluster])
        assert problems == []
        services = {}
        for release in found:
            for service in release.chart.services:
                if release.when(service.when):
                    name = platform.fill(service.name, release.name, release.chart, release.values)
                    services[f"{name}.{release.namespace}"] = release.value(service.port_value)
        assert services["argo-server.argo"] == 2746
        assert services["prometheus-pushgateway.monitoring"] == 9091
        assert services["kube-prometheus-stack-prometheus.monitoring"] == 9090
    config = next(
        o
        for o in rendered[OVERLAYS[1]]
        if o["kind"] == "ConfigMap" and "drift-monitor-config" in o["metadata"]["name"]
    )
    assert config["data"]["ARGO_SERVER_URL"] == "http://argo-server.argo.svc:2746"


def test_argo_workflows_writes_nothing_outside_its_namespace(
    rendered: dict[str, list[Obj]],
) -> None:
    app = only(rendered[CLUSTERS[0]], "Application", "argo-workflows")
    (release,), _ = platform_wiring.releases([app])
    assert release.namespace == "argo"
    assert not [f for f in release.chart.foreign if release.when(f.when)]
    defaults = platform_wiring.Release(app, release.chart, {})
    assert [f.objects for f in defaults.chart.foreign if defaults.when(f.when)] == [
        "Role and RoleBinding {fullname}-workflow (the executor's rights)"
    ]  # the chart's default would write them into `default`
    assert release.value("crds.full") is True


def test_crds_come_before_the_apps(rendered: dict[str, list[Obj]]) -> None:
    for cluster in CLUSTERS:
        objects = rendered[cluster]
        appset = only(objects, "ApplicationSet")
        for name in ("kube-prometheus-stack", "argo-rollouts", "argo-workflows"):
            app = only(objects, "Application", name)
            assert platform_wiring.wave(app) < platform_wiring.wave(appset)
        # the Rollouts chart's ServiceMonitor needs the Prometheus stack's CRD first
        assert platform_wiring.wave(only(objects, "Application", "kube-prometheus-stack")) < (
            platform_wiring.wave(only(objects, "Application", "argo-rollouts"))
        )
        broken = [o for o in objects if o["metadata"]["name"] != "argo-workflows"]
        rules = {
            f.message.split(":")[0] for f in platform_wiring.check_platform(broken, render_overlay)
        }
        assert rules == {"rule crds-installed", "rule services-installed"}


# ---- defect 4: Istio's Applications ----------------------------------------------------------


def test_istio_applications_ignore_what_istiod_rewrites(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[CLUSTERS[1]]
    for name, webhook in (
        ("istio-base", "istiod-default-validator"),
        ("istiod", "istio-validator-istio-system"),
    ):
        app = only(objects, "Application", name)
        assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
        (entry,) = app["spec"]["ignoreDifferences"]
        assert entry["name"] == webhook and entry["kind"] == "ValidatingWebhookConfiguration"
    # the issue's state: ignore on istio-base only, Respect on istiod only
    broken = copy.deepcopy(objects)
    base, istiod = only(broken, "Application", "istio-base"), only(broken, "Application", "istiod")
    base["spec"]["syncPolicy"]["syncOptions"].remove("RespectIgnoreDifferences=true")
    del istiod["spec"]["ignoreDifferences"]
    messages = [f.message for f in platform_wiring.check_platform(broken, render_overlay)]
    assert sum(m.startswith("rule runtime-fields") for m in messages) == 2
    assert sum(m.startswith("rule ignore-differences") for m in messages) == 1


# ---- defect 5: waves wait, the window blocks something ------------------------------------------


def test_argo_cd_assesses_application_health_before_the_waves(
    rendered: dict[str, list[Obj]],
) -> None:
    for cluster in CLUSTERS:
        objects = rendered[cluster]
        config = only(objects, "ConfigMap", "argocd-cm")
        assert config["metadata"]["namespace"] == "argocd"
        script = config["data"][platform_wiring.HEALTH_KEY]
        assert "obj.status.health.status" in script and '"Progressing"' in script
        ordered = [o for o in objects if o["kind"] in ("Application", "ApplicationSet")]
        first = min(platform_wiring.wave(o) for o in ordered if not platform_wiring._is_root(o))
        assert platform_wiring.wave(config) < first
        projects = [o for o in objects if o["kind"] == "AppProject"]
        assert all(platform_wiring.wave(config) < platform_wiring.wave(p) for p in projects)


def test_the_weekend_window_blocks_the_automatic_changes(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[CLUSTERS[1]]
    platform_project = only(objects, "AppProject", "platform-production")
    (window,) = platform_project["spec"]["syncWindows"]
    assert window["kind"] == "deny" and window["manualSync"] is True
    automated = [
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "Application" and o["spec"].get("syncPolicy", {}).get("automated")
    ]
    assert "kube-prometheus-stack" in automated and "root-production" in automated
    assert not only(objects, "AppProject", "apps-production")["spec"].get("syncWindows")
    # the issue's state: the window on the manual-only apps
    broken = copy.deepcopy(objects)
    only(broken, "AppProject", "apps-production")["spec"]["syncWindows"] = [dict(window)]
    messages = [f.message for f in platform_wiring.check_platform(broken, render_overlay)]
    assert [m for m in messages if "sync-window-effective" in m]


# ---- helpers -----------------------------------------------------------------------------------


def test_helm_fullname_follows_the_charts_helper() -> None:
    pushgateway = platform.chart("prometheus-pushgateway", "3.8.0")
    stack = platform.chart("kube-prometheus-stack", "75.15.1")
    assert pushgateway is not None and stack is not None
    assert (
        platform.helm_fullname("prometheus-pushgateway", pushgateway, {})
        == "prometheus-pushgateway"
    )
    assert platform.helm_fullname("metrics", pushgateway, {}) == "metrics-prometheus-pushgateway"
    assert platform.helm_fullname("x", pushgateway, {"fullnameOverride": "pg"}) == "pg"
    assert platform.helm_fullname("x", pushgateway, {"nameOverride": "x"}) == "x"
    assert len(platform.helm_fullname("a-very-long-release-name-indeed", stack, {})) <= 26


def test_helm_values_precedence() -> None:
    app: dict[str, Any] = {
        "spec": {
            "source": {
                "helm": {
                    "values": "a:\n  b: 1\n",
                    "parameters": [{"name": "a.c", "value": "2"}],
                }
            }
        }
    }
    assert platform_wiring.helm_values(app) == {"a": {"b": 1, "c": "2"}}
    app["spec"]["source"]["helm"]["valuesObject"] = {"a": {"b": 3}}
    assert platform_wiring.helm_values(app) == {"a": {"b": 3, "c": "2"}}
    assert platform.helm_conditions({"x": False}, ("!x", "y"), {"y": True})
    assert not platform.helm_conditions({}, ("y",), {"y": False})


def test_an_unknown_chart_version_is_reported(rendered: dict[str, list[Obj]]) -> None:
    objects = copy.deepcopy(rendered[CLUSTERS[0]])
    only(objects, "Application", "argo-rollouts")["spec"]["source"]["targetRevision"] = "2.41.0"
    messages = [f.message for f in platform_wiring.check_platform(objects, render_overlay)]
    assert any(re.match(r"rule chart-pinned: chart argo-rollouts 2.41.0", m) for m in messages)


def test_platform_docs_name_every_chart(repo_root: Path) -> None:
    """The versions table of docs/PLATFORM.md is the table of scripts/platform.py."""
    lines = (repo_root / "docs" / "PLATFORM.md").read_text().splitlines()
    for item in platform.CHARTS:
        rows = [
            line
            for line in lines
            if line.startswith(f"| {item.name}") or line.startswith(f"| base, {item.name}")
        ]
        assert any(f"| {item.version} |" in r and item.app_version in r for r in rows), item.ref
    assert REPO_ROOT == repo_root
