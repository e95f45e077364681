"""The Prometheus stand-in's scrape jobs, shaped like the operator's for a PodMonitor."""

from __future__ import annotations

from pathlib import Path

from scripts.cluster.addons import scrape_jobs
from scripts.cluster.service_proxy import ServiceResolver
from scripts.manifests.render import render_overlay

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_podmonitor_keeps_its_pods_and_relabels_them() -> None:
    objects = render_overlay(REPO / "apps/digits-classifier/overlays/staging")
    monitors = [o for o in objects if o["kind"] == "PodMonitor"]
    (job,) = scrape_jobs(monitors, "https://127.0.0.1:1", {"ca_file": "ca"}, "1s")
    assert job["scrape_interval"] == "1s"
    assert job["kubernetes_sd_configs"][0]["namespaces"] == {"names": ["digits-classifier-staging"]}
    keeps = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert {
        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
        "regex": "http",
        "action": "keep",
    } in keeps
    targets = [r.get("target_label") for r in job["relabel_configs"]]
    # the operator's labels first, then the PodMonitor's own relabelings (the analyses use them)
    assert targets.index("namespace") < targets.index("rollouts_pod_template_hash")


def test_only_cluster_service_names_resolve() -> None:
    assert ServiceResolver.split("prom.monitoring.svc") == ("monitoring", "prom")
    assert ServiceResolver.split("prom.monitoring.svc.cluster.local.") == ("monitoring", "prom")
    assert ServiceResolver.split("example.com") is None
    assert ServiceResolver.split("a.b.svc.other.domain") is None


def test_the_cluster_serves_every_custom_kind_we_ship() -> None:
    """CLUSTER_KINDS leaves most CRDs of the platform modules out for speed; never one we use."""
    from scripts.cluster.__main__ import CLUSTER_KINDS, cluster_crds
    from scripts.manifests.render import discover_targets
    from scripts.platform import PLATFORM, crd_documents

    custom = {d["spec"]["names"]["kind"] for item in PLATFORM for d in crd_documents(item)}
    shipped = {o["kind"] for target in discover_targets() for o in render_overlay(target)}
    assert shipped & custom <= CLUSTER_KINDS
    assert {d["spec"]["names"]["kind"] for d in cluster_crds()} == CLUSTER_KINDS
