"""The platform our manifests run on, pinned: which upstream version each cluster add-on is, where
its CustomResourceDefinitions are in that version's Go module, and which Helm chart ships it.

One table serves everything that needs the platform's CRDs: `make cluster-up` installs them into
the local API server, and the schemas under schemas/ are generated from them. CHARTS says which
chart version ships which component version (read from each chart's history: its Chart.yaml
`appVersion` at that version) and what the chart does that the wiring in clusters/ must allow for
(objects outside its namespace, the Services it creates, fields its controller rewrites), read
from the chart's templates and default values at that version. Helm charts cannot be rendered
here (no chart repositories), so these facts are the input of the platform checks of
`make manifests` (scripts/manifests/platform_wiring.py); docs/PLATFORM.md says where each was read.
A test checks that every chart Application in clusters/ is one of CHARTS.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml


class _CrdLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML 1.1's `=` (the "value" key type) is a plain string in CRD enums, not a tag to refuse."""


_CrdLoader.add_constructor(
    "tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node)
)


class PlatformError(RuntimeError):
    """A platform module cannot be had or does not hold what the table says."""


@dataclass(frozen=True)
class Component:
    name: str
    module: str
    version: str
    crd_files: tuple[str, ...]
    """Files inside the module (relative paths) whose documents are CRDs."""

    @property
    def charts(self) -> tuple[str, ...]:
        """`<chart> <version>` of each chart in CHARTS that ships this component."""
        return tuple(f"{c.name} {c.version}" for c in CHARTS if c.component == self.name)

    @property
    def chart(self) -> str | None:
        """The chart that installs this component's CRDs (the first of `charts`), if any."""
        return self.charts[0] if self.charts else None


PLATFORM: tuple[Component, ...] = (
    Component(
        name="argo-rollouts",
        module="github.com/argoproj/argo-rollouts",
        version="v1.8.3",
        crd_files=(
            "manifests/crds/rollout-crd.yaml",
            "manifests/crds/analysis-template-crd.yaml",
            "manifests/crds/cluster-analysis-template-crd.yaml",
            "manifests/crds/analysis-run-crd.yaml",
            "manifests/crds/experiment-crd.yaml",
        ),
    ),
    Component(
        name="prometheus-operator",
        module="github.com/prometheus-operator/prometheus-operator",
        version="v0.83.0",
        crd_files=tuple(
            f"example/prometheus-operator-crd/monitoring.coreos.com_{kind}.yaml"
            for kind in (
                "alertmanagerconfigs",
                "alertmanagers",
                "podmonitors",
                "probes",
                "prometheusagents",
                "prometheuses",
                "prometheusrules",
                "scrapeconfigs",
                "servicemonitors",
                "thanosrulers",
            )
        ),
    ),
    Component(
        name="istio",
        module="istio.io/api",
        version="v1.24.3",
        crd_files=("kubernetes/customresourcedefinitions.gen.yaml",),
    ),
    Component(
        # >= 3.6 for CronWorkflow `spec.schedules`; 3.7.11 is the last 3.x release.
        name="argo-workflows",
        module="github.com/argoproj/argo-workflows/v3",
        version="v3.7.11",
        crd_files=tuple(
            f"manifests/base/crds/full/argoproj.io_{kind}.yaml"
            for kind in (
                "clusterworkflowtemplates",
                "cronworkflows",
                "workflowartifactgctasks",
                "workfloweventbindings",
                "workflows",
                "workflowtaskresults",
                "workflowtasksets",
                "workflowtemplates",
            )
        ),
    ),
    Component(
        # no CRDs; the drift monitor pushes its metrics here
        name="pushgateway",
        module="github.com/prometheus/pushgateway",
        version="v1.11.3",
        crd_files=(),
    ),
    Component(
        name="argo-cd",
        module="github.com/argoproj/argo-cd/v3",
        version="v3.2.11",
        crd_files=(
            "manifests/crds/application-crd.yaml",
            "manifests/crds/applicationset-crd.yaml",
            "manifests/crds/appproject-crd.yaml",
        ),
    ),
)


def component(name: str) -> Component:
    for item in PLATFORM:
        if item.name == name:
            return item
    raise PlatformError(f"no platform component {name!r}")


# ---- Helm charts: which version ships which component, and what it does besides ----------------

HELM_ARGO = "https://argoproj.github.io/argo-helm"
HELM_PROMETHEUS = "https://prometheus-community.github.io/helm-charts"
HELM_ISTIO = "https://istio-release.storage.googleapis.com/charts"


@dataclass(frozen=True)
class ForeignObjects:
    """Objects a chart writes outside its release namespace: the AppProject must allow there."""

    objects: str
    """What, for messages: `{fullname}` and `{release}` are filled in."""
    namespace: str = ""
    """A fixed namespace, or ..."""
    namespaces_value: str = ""
    """... the values path of a list of namespaces."""
    when: tuple[str, ...] = ()
    """Values paths that must all be true (`!path`: false) for the chart to write them."""


@dataclass(frozen=True)
class ChartService:
    """A Service the chart creates in its release namespace, that apps may call."""

    name: str
    """Template: `{fullname}`, `{release}` and `{values:<path>}` are filled in."""
    port_value: str
    tls_value: str = ""
    """Values path that is true when the Service speaks TLS (empty: never)."""
    when: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuntimeField:
    """A field of a chart object that a controller rewrites after the sync: the Application must
    ignore it and respect that on sync, or Argo CD and the controller overwrite each other."""

    group: str
    kind: str
    name: str
    json_pointer: str
    jq_path: str
    why: str
    when: tuple[str, ...] = ()


@dataclass(frozen=True)
class Chart:
    name: str
    version: str
    repo: str
    app_version: str
    """`appVersion` of the chart's Chart.yaml at this version."""
    component: str
    defaults: dict[str, Any]
    """The chart's default of every values path the facts below use."""
    installs_crds_when: tuple[str, ...] | None = None
    """None: the chart installs no CRDs; else the values paths that must be true."""
    fullname_max: int = 63
    """Length the chart truncates its `fullname` helper to."""
    foreign: tuple[ForeignObjects, ...] = ()
    services: tuple[ChartService, ...] = ()
    runtime_fields: tuple[RuntimeField, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name} {self.version}"


_KPS_EXPORTERS = (
    ("kubeControllerManager", "kube-controller-manager"),
    ("coreDns", "coredns"),
    ("kubeEtcd", "kube-etcd"),
    ("kubeScheduler", "kube-scheduler"),
    ("kubeProxy", "kube-proxy"),
)

_ISTIO_WEBHOOK_WHY = (
    "istiod's webhook controller sets failurePolicy from Ignore to Fail (and the caBundle) on every"
    " ValidatingWebhookConfiguration labelled istio.io/rev=default once its webhook serves"
)

CHARTS: tuple[Chart, ...] = (
    Chart(
        name="argo-rollouts",
        version="2.40.5",
        repo=HELM_ARGO,
        app_version="v1.8.3",
        component="argo-rollouts",
        defaults={"installCRDs": True},
        installs_crds_when=("installCRDs",),
    ),
    Chart(
        name="kube-prometheus-stack",
        version="75.15.1",
        repo=HELM_PROMETHEUS,
        app_version="v0.83.0",
        component="prometheus-operator",
        defaults={
            "crds.enabled": True,
            "kubernetesServiceMonitors.enabled": True,
            "prometheus.enabled": True,
            "prometheus.service.enabled": True,
            "prometheus.service.port": 9090,
            **{f"{key}.enabled": True for key, _ in _KPS_EXPORTERS},
            **{f"{key}.service.enabled": True for key, _ in _KPS_EXPORTERS},
        },
        installs_crds_when=("crds.enabled",),
        fullname_max=26,
        foreign=tuple(
            ForeignObjects(
                objects=f"Service {{fullname}}-{suffix} (a headless Service for its scrape)",
                namespace="kube-system",
                when=(
                    "kubernetesServiceMonitors.enabled",
                    f"{key}.enabled",
                    f"{key}.service.enabled",
                ),
            )
            for key, suffix in _KPS_EXPORTERS
        ),
        services=(
            ChartService(
                name="{fullname}-prometheus",
                port_value="prometheus.service.port",
                when=("prometheus.enabled", "prometheus.service.enabled"),
            ),
        ),
    ),
    Chart(
        name="prometheus-pushgateway",
        version="3.8.0",
        repo=HELM_PROMETHEUS,
        app_version="v1.11.3",
        component="pushgateway",
        defaults={"service.port": 9091},
        services=(ChartService(name="{fullname}", port_value="service.port"),),
    ),
    Chart(
        name="argo-workflows",
        version="0.47.5",
        repo=HELM_ARGO,
        app_version="v3.7.11",
        component="argo-workflows",
        defaults={
            "crds.install": True,
            "singleNamespace": False,
            "controller.workflowNamespaces": ["default"],
            "workflow.rbac.create": True,
            "workflow.serviceAccount.create": False,
            "server.enabled": True,
            "server.name": "server",
            "server.servicePort": 2746,
            "server.secure": False,
        },
        installs_crds_when=("crds.install",),
        foreign=(
            ForeignObjects(
                objects="Role and RoleBinding {fullname}-workflow (the executor's rights)",
                namespaces_value="controller.workflowNamespaces",
                when=("!singleNamespace", "workflow.rbac.create"),
            ),
            ForeignObjects(
                objects="ServiceAccount for workflow pods",
                namespaces_value="controller.workflowNamespaces",
                when=("!singleNamespace", "workflow.serviceAccount.create"),
            ),
        ),
        services=(
            ChartService(
                name="{fullname}-{values:server.name}",
                port_value="server.servicePort",
                tls_value="server.secure",
                when=("server.enabled",),
            ),
        ),
    ),
    Chart(
        name="base",
        version="1.24.3",
        repo=HELM_ISTIO,
        app_version="1.24.3",
        component="istio",
        defaults={"defaultRevision": "default", "base.validationCABundle": ""},
        installs_crds_when=(),
        runtime_fields=(
            RuntimeField(
                group="admissionregistration.k8s.io",
                kind="ValidatingWebhookConfiguration",
                name="istiod-default-validator",
                json_pointer="/webhooks/0/failurePolicy",
                jq_path=".webhooks[]?.failurePolicy",
                why=_ISTIO_WEBHOOK_WHY,
                when=("defaultRevision", "!base.validationCABundle"),
            ),
        ),
    ),
    Chart(
        name="istiod",
        version="1.24.3",
        repo=HELM_ISTIO,
        app_version="1.24.3",
        component="istio",
        defaults={
            "global.configValidation": True,
            "base.validationCABundle": "",
            "revision": "",
        },
        runtime_fields=(
            RuntimeField(
                group="admissionregistration.k8s.io",
                kind="ValidatingWebhookConfiguration",
                name="istio-validator-istio-system",
                json_pointer="/webhooks/0/failurePolicy",
                jq_path=".webhooks[]?.failurePolicy",
                why=_ISTIO_WEBHOOK_WHY,
                when=("global.configValidation", "!base.validationCABundle", "!revision"),
            ),
        ),
    ),
)


def chart(name: str, version: str) -> Chart | None:
    for item in CHARTS:
        if item.name == name and item.version == version:
            return item
    return None


def helm_value(values: dict[str, Any], path: str, defaults: dict[str, Any]) -> Any:
    """A dotted values path: the Application's value when it sets one, else the chart default."""
    node: Any = values
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return defaults.get(path)
        node = node[key]
    return node


def helm_conditions(
    values: dict[str, Any], paths: tuple[str, ...], defaults: dict[str, Any]
) -> bool:
    """Whether every path is truthy (`!path`: falsy), Helm's `if and ...`."""
    return all(
        (
            (not helm_value(values, p[1:], defaults))
            if p.startswith("!")
            else bool(helm_value(values, p, defaults))
        )
        for p in paths
    )


def helm_fullname(release: str, item: Chart, values: dict[str, Any]) -> str:
    """The `<chart>.fullname` helper these charts share: fullnameOverride, else the release name
    when it contains the chart name (or nameOverride), else `<release>-<name>`; truncated."""
    override = values.get("fullnameOverride")
    if override:
        full = str(override)
    else:
        name = str(values.get("nameOverride") or item.name)
        full = release if name in release else f"{release}-{name}"
    return full[: item.fullname_max].rstrip("-")


def fill(template: str, release: str, item: Chart, values: dict[str, Any]) -> str:
    """A name template of the facts with the release's values filled in."""
    out = template.replace("{fullname}", helm_fullname(release, item, values))
    out = out.replace("{release}", release)
    while "{values:" in out:
        start = out.index("{values:")
        end = out.index("}", start)
        out = (
            out[:start]
            + str(helm_value(values, out[start + 8 : end], item.defaults))
            + out[end + 1 :]
        )
    return out


@lru_cache(maxsize=None)
def module_dir(module: str, version: str) -> Path:
    """The module's folder in Go's module cache, downloaded (checksum-verified) when missing."""
    env = dict(os.environ, GOFLAGS="-mod=mod")
    try:
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            capture_output=True,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parent,
        )
    except FileNotFoundError:
        raise PlatformError(
            f"{module}@{version}: the Go toolchain is needed to fetch it (tools/engines/README.md)"
        ) from None
    info: dict[str, Any] = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "Dir" not in info:
        reason = info.get("Error") or result.stderr.strip()
        raise PlatformError(f"go mod download {module}@{version}: {reason}")
    return Path(info["Dir"])


def crd_documents(item: Component) -> Iterator[dict[str, Any]]:
    """Every CRD of `item`, as parsed documents, in the table's file order."""
    if not item.crd_files:
        return  # nothing to download (the Pushgateway has no CRDs)
    root = module_dir(item.module, item.version)
    for relative in item.crd_files:
        path = root / relative
        if not path.is_file():
            raise PlatformError(f"{item.module}@{item.version}: no file {relative}")
        for document in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_CrdLoader):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                yield document
