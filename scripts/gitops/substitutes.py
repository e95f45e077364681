"""Platform Applications whose Helm charts cannot be fetched here, marked as substituted.

clusters/_platform installs its controllers from Helm chart repositories, which this machine
cannot reach. `make cluster-up` runs stand-ins for them instead (the real Argo Rollouts
controller, a real Prometheus, the pinned CRDs). Argo CD still syncs every one of these
Application objects from git (the root Application applies them, in their waves); what it
cannot do is render their charts. So before Argo CD starts, each is created with:

- `argocd.argoproj.io/skip-reconcile: "true"`, Argo CD's own switch that makes the application
  controller leave an Application alone (no chart fetch, no ComparisonError),
- a status saying Healthy with the message "substituted: ..." naming the stand-in, which the
  Application health check of clusters/_platform/argocd-cm.yaml reads, so the root's sync waves
  wait for it exactly as for a real one,
- the annotation `gitops.mlops.example.com/substituted` with the same text.

Everything else (projects, the ApplicationSet, the apps) is rendered and synced by Argo CD.
"""

from __future__ import annotations

import copy
from typing import Any

from scripts.platform import CHARTS, component

SUBSTITUTED = "gitops.mlops.example.com/substituted"
SKIP_RECONCILE = "argocd.argoproj.io/skip-reconcile"

STAND_INS = {
    "argo-rollouts": "the real Argo Rollouts controller {argo-rollouts} (process, upstream RBAC)"
    " and its CRDs, from make cluster-up",
    "kube-prometheus-stack": "a real Prometheus scraping the PodMonitors, and the"
    " prometheus-operator {prometheus-operator} CRDs, from make cluster-up (no operator,"
    " Alertmanager or rule evaluation)",
    "argo-workflows": "the Argo Workflows {argo-workflows} CRDs only, from make cluster-up (no"
    " workflow controller: WorkflowTemplates and CronWorkflows are stored, never run)",
    "prometheus-pushgateway": "nothing (no Pushgateway runs here; the drift job's pushes would"
    " fail)",
    "base": "the Istio {istio} CRDs only, from make cluster-up (no validating webhook)",
    "istiod": "nothing (no istiod: pods get no sidecar, VirtualService weights route nothing)",
}
"""What `make cluster-up` puts in place of each chart (a test: every chart of CHARTS is here)."""


def chart_of(application: dict[str, Any]) -> tuple[str, str, str] | None:
    """(chart, version, repository) of a Helm-chart Application, None for any other."""
    spec = application.get("spec") or {}
    for source in [spec.get("source")] + list(spec.get("sources") or []):
        if isinstance(source, dict) and source.get("chart"):
            return str(source["chart"]), str(source.get("targetRevision")), str(source["repoURL"])
    return None


def stand_in(chart: str) -> str:
    versions = {
        "argo-rollouts": component("argo-rollouts").version,
        "prometheus-operator": component("prometheus-operator").version,
        "argo-workflows": component("argo-workflows").version,
        "istio": component("istio").version,
    }
    text = STAND_INS.get(chart, "nothing stands in for it here")
    for name, version in versions.items():
        text = text.replace("{" + name + "}", version)
    return text


def substitute(application: dict[str, Any]) -> dict[str, Any] | None:
    """The object to create for a Helm-chart Application before Argo CD starts; None when
    `application` is not one (Argo CD syncs it for real)."""
    found = chart_of(application)
    if found is None:
        return None
    chart, version, repository = found
    message = (
        f"substituted: Helm chart {chart} {version} cannot be fetched here ({repository} is"
        f" unreachable); in its place: {stand_in(chart)}"
    )
    marked = copy.deepcopy(application)
    metadata = marked.setdefault("metadata", {})
    annotations = metadata.setdefault("annotations", {})
    annotations[SKIP_RECONCILE] = "true"
    annotations[SUBSTITUTED] = message
    marked["status"] = {
        "health": {"status": "Healthy", "message": message},
        "sync": {"status": "Unknown"},
    }
    return marked


def known_charts() -> set[str]:
    return {item.name for item in CHARTS}
