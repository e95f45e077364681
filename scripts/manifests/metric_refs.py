"""Every metric the AnalysisTemplates and alert rules query must be one the model service really
exports. The exported set comes from a /metrics text exposition: fetched from a running service,
or from a service this module starts itself (`python -m ml.serving`)."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from scripts.manifests.analysis import prometheus_queries
from scripts.processes import running_service
from scripts.manifests.vocabulary import REPO_ROOT, Finding, Obj

# Metrics the platform exports (not the service): alert rules may use these, analysis may not.
PLATFORM_METRICS = {
    "up": "Prometheus",
    "rollout_info_replicas_available": "Argo Rollouts controller",
    "container_cpu_usage_seconds_total": "cAdvisor (kubelet)",
    "container_memory_working_set_bytes": "cAdvisor (kubelet)",
    "kube_pod_container_resource_limits": "kube-state-metrics",
}

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "atan2", "inf", "nan", "start", "end",
}  # fmt: skip


def exported_metric_names(exposition: str) -> set[str]:
    """Series names a Prometheus text exposition can produce.

    A labelled metric that has not been observed yet has only `# TYPE` lines and no samples, so
    names come from both: `# TYPE x counter` yields x_total (and x_created), histograms their
    _bucket/_sum/_count series, plus every sample name as printed.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                name, kind = parts[2], parts[3]
                family = (
                    name[: -len("_total")]
                    if kind == "counter" and name.endswith("_total")
                    else name
                )
                names.add(name)
                names.update(family + s for s in _SUFFIXES.get(kind, ()))
            continue
        match = re.match(_NAME, line)
        if match:
            names.add(match.group(0))
    return names


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and label names excluded)."""
    text = re.sub(r"{{.*?}}", "0", expr)  # Argo templating, e.g. {{args.threshold}}
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', text)
    names: set[str] = set()
    for match in re.finditer(r'__name__\s*=\s*"([^"]*)"', expr):
        names.add(match.group(1))
    text = re.sub(r"{[^}]*}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    for match in re.finditer(rf"(?<![\w:.]){_NAME}", text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function call
        if word.lower() in _KEYWORDS or re.fullmatch(r"\d.*", word):
            continue
        names.add(word)
    return names


def rule_expressions(objects: list[Obj]) -> Iterator[tuple[Obj, str, str]]:
    """(PrometheusRule, field, expr) for every alerting and recording rule."""
    for rule in (o for o in objects if o.get("kind") == "PrometheusRule"):
        for g, group in enumerate((rule.get("spec") or {}).get("groups") or []):
            for r, item in enumerate((group or {}).get("rules") or []):
                if isinstance((item or {}).get("expr"), str):
                    yield rule, f"spec.groups[{g}].rules[{r}].expr", item["expr"]


@lru_cache(maxsize=1)
def job_metric_names() -> frozenset[str]:
    """Series the drift-monitor CronJob (ml/monitoring) pushes through the Pushgateway.

    Like the platform's, alert rules may use them; canary analysis may not (they change hourly).
    Taken from the job's own registry, so a renamed gauge fails here, not in production.
    """
    from ml.monitoring.metrics import exposition

    return frozenset(exported_metric_names(exposition()))


def check_metrics(objects: list[Obj], exported: set[str]) -> Iterator[Finding]:
    """Each queried metric is exported by the service (alert rules may also use the platform's
    and the drift monitor's)."""
    recorded = {
        str(item.get("record"))
        for rule in objects
        if rule.get("kind") == "PrometheusRule"
        for group in (rule.get("spec") or {}).get("groups") or []
        for item in (group or {}).get("rules") or []
        if (item or {}).get("record")
    }
    for obj, field, query in prometheus_queries(objects):
        for name in sorted(promql_metric_names(query) - exported):
            yield Finding(
                "metrics", obj, field, f"metric {name!r} is not exported by the model service"
            )
    for obj, field, expr in rule_expressions(objects):
        allowed = exported | set(PLATFORM_METRICS) | job_metric_names() | recorded
        for name in sorted(promql_metric_names(expr) - allowed):
            yield Finding(
                "metrics",
                obj,
                field,
                f"metric {name!r} is neither exported by the model service nor a known platform "
                f"metric ({', '.join(sorted(PLATFORM_METRICS))}) nor the drift monitor's",
            )


def fetch_exposition(url: str, timeout: float = 10.0) -> str:
    """GET a /metrics page (a running service: --metrics-url)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback URL)
        return str(response.read().decode("utf-8"))


def serve_and_fetch(model_path: Path, timeout: float = 60.0) -> str:
    """Start the real service on a free loopback port, wait until ready, return its /metrics."""
    with running_service(model_path, timeout=timeout) as base:
        return fetch_exposition(f"{base}/metrics")


def contract_exposition(contracts: Path = REPO_ROOT / "docs" / "CONTRACTS.md") -> str:
    """A `# TYPE` exposition built from the metric table of docs/CONTRACTS.md.

    Only a stand-in for when no service can be started: output says so, since the contract is a
    document, not the service.
    """
    lines = []
    for row in contracts.read_text().splitlines():
        match = re.match(r"\|\s*`(" + _NAME + r")`\s*\|\s*(counter|gauge|histogram|summary)", row)
        if match:
            lines.append(f"# TYPE {match.group(1)} {match.group(2)}")
    if not lines:
        raise RuntimeError(f"no metric table found in {contracts}")
    return "\n".join(lines) + "\n"


def service_available(root: Path = REPO_ROOT) -> bool:
    return (root / "ml" / "serving" / "__main__.py").is_file()
