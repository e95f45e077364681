"""The network paths the apps need really open under their default-deny NetworkPolicies (and
nothing else): Prometheus in to the model pods, the production sidecars out to istiod; and the
mesh is wired where a DestinationRule asks for mTLS. Evaluated on the rendered overlays with the
NetworkPolicy semantics of scripts/manifests/network.py."""

from __future__ import annotations

import copy

import pytest

from scripts.manifests import network
from scripts.manifests.vocabulary import Obj
from tests.manifests.conftest import only

OVERLAYS = [f"apps/digits-classifier/overlays/{env}" for env in ("dev", "staging", "production")]

# What prometheus-operator v0.83.0 puts on the pods of a Prometheus named
# kube-prometheus-stack-prometheus (makeSelectorLabels in pkg/prometheus/server/operator.go).
PROMETHEUS_POD = network.Endpoint(
    "monitoring",
    {
        "app.kubernetes.io/managed-by": "prometheus-operator",
        "app.kubernetes.io/name": "prometheus",
        "app.kubernetes.io/instance": "kube-prometheus-stack-prometheus",
        "operator.prometheus.io/name": "kube-prometheus-stack-prometheus",
        "prometheus": "kube-prometheus-stack-prometheus",
    },
)


# ---- defect 1: Prometheus reaches the model pods ------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_may_scrape_the_model_pods(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    pods = _model_pods(objects)
    assert network.traffic_allowed(objects, PROMETHEUS_POD, pods, 8080)
    stranger = network.Endpoint("monitoring", {"app.kubernetes.io/name": "grafana"})
    assert not network.traffic_allowed(objects, stranger, pods, 8080)


def test_the_issue_state_admits_no_prometheus(rendered: dict[str, list[Obj]]) -> None:
    """With matchLabels the app's labels replace Prometheus' (what kustomize rendered before)."""
    objects = copy.deepcopy(rendered[OVERLAYS[1]])
    policy = next(o for o in objects if o["metadata"]["name"].endswith("server-allow-prometheus"))
    peer = policy["spec"]["ingress"][0]["from"][0]
    peer["podSelector"] = {
        "matchLabels": {
            "app.kubernetes.io/name": "digits-classifier",
            "app.kubernetes.io/part-of": "mlops-gitops",
        }
    }
    assert not network.traffic_allowed(objects, PROMETHEUS_POD, _model_pods(objects), 8080)


# ---- defect 4: Istio, the pods' side ----------------------------------------------------------


def _model_pods(objects: list[Obj]) -> network.Endpoint:
    rollout = only(objects, "Rollout")
    labels = dict(rollout["spec"]["template"]["metadata"]["labels"])
    return network.Endpoint(rollout["metadata"]["namespace"], labels)


def test_production_pods_join_the_mesh_and_reach_istiod(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[OVERLAYS[2]]
    pods = _model_pods(objects)
    assert pods.labels[network.INJECT_LABEL] == "true"
    istiod = network.Endpoint("istio-system", network.ISTIOD_POD_LABELS)
    assert network.traffic_allowed(objects, pods, istiod, 15012)
    assert not network.traffic_allowed(objects, pods, istiod, 15010)  # only what it needs
    without = [o for o in objects if not o["metadata"]["name"].endswith("allow-istiod")]
    assert not network.traffic_allowed(without, pods, istiod, 15012)
    rule = only(objects, "DestinationRule")
    assert rule["spec"]["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL"
    for env in OVERLAYS[:2]:
        assert network.INJECT_LABEL not in _model_pods(rendered[env]).labels
