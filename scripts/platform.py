"""The platform our manifests run on, pinned: which upstream version each cluster add-on is, and
where its CustomResourceDefinitions are in that version's Go module.

One table serves everything that needs the platform's CRDs: `make cluster-up` installs them into
the local API server, and the schemas under schemas/ are generated from them. The Helm chart
versions in clusters/*/platform/ must ship exactly these versions (a test compares them).
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
    charts: tuple[str, ...] = ()
    """`<chart> <version>` of each Helm chart in clusters/ that ships this version (read from the
    chart's own history: its Chart.yaml `appVersion` at that chart version)."""

    @property
    def chart(self) -> str | None:
        """The chart that installs this component's CRDs (the first of `charts`), if any."""
        return self.charts[0] if self.charts else None


PLATFORM: tuple[Component, ...] = (
    Component(
        name="argo-rollouts",
        module="github.com/argoproj/argo-rollouts",
        version="v1.8.3",
        charts=("argo-rollouts 2.40.5",),
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
        charts=("kube-prometheus-stack 75.15.1",),
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
        charts=("base 1.24.3", "istiod 1.24.3"),
        crd_files=("kubernetes/customresourcedefinitions.gen.yaml",),
    ),
    Component(
        # >= 3.6 for CronWorkflow `spec.schedules`; the last 3.x release, 3.7.11 (chart 0.47.5).
        name="argo-workflows",
        module="github.com/argoproj/argo-workflows/v3",
        version="v3.7.11",
        charts=("argo-workflows 0.47.5",),
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
        charts=("prometheus-pushgateway 3.8.0",),
        crd_files=(),
    ),
    Component(
        name="argo-cd",
        module="github.com/argoproj/argo-cd/v3",
        version="v3.3.19",
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
    root = module_dir(item.module, item.version)
    for relative in item.crd_files:
        path = root / relative
        if not path.is_file():
            raise PlatformError(f"{item.module}@{item.version}: no file {relative}")
        for document in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_CrdLoader):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                yield document
