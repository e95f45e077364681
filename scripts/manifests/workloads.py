"""Where pods hide in workload objects: one helper so every check sees every kind the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scripts.manifests.vocabulary import Obj

TEMPLATE_KINDS = ("Rollout", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


@dataclass(frozen=True)
class PodTemplate:
    """A pod spec inside an object, with the field prefix messages use."""

    obj: Obj
    prefix: str
    labels: dict[str, str]
    spec: dict[str, Any]

    def containers(self, init: bool = True) -> list[tuple[str, dict[str, Any]]]:
        keys = ("containers", "initContainers") if init else ("containers",)
        out = []
        for key in keys:
            for i, c in enumerate(self.spec.get(key) or []):
                if isinstance(c, dict):
                    out.append((f"{self.prefix}{key}[{i}]", c))
        return out


def pod_templates(obj: Obj) -> list[PodTemplate]:
    kind = obj.get("kind")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
    if spec is None:
        return []
    if kind == "Pod":
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return [PodTemplate(obj, "spec.", dict(labels), spec)]
    template: Any = None
    prefix = ""
    if kind in TEMPLATE_KINDS:
        template, prefix = spec.get("template"), "spec.template."
    elif kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
        prefix = "spec.jobTemplate.spec.template."
    if not isinstance(template, dict):
        return []
    labels = (template.get("metadata") or {}).get("labels") or {}
    pod_spec: dict[str, Any] = template["spec"] if isinstance(template.get("spec"), dict) else {}
    return [PodTemplate(obj, prefix + "spec.", dict(labels), pod_spec)]


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Label-selector semantics for matchLabels/matchExpressions (or a plain map)."""
    if not selector:
        return True
    if "matchLabels" in selector or "matchExpressions" in selector:
        match = selector.get("matchLabels") or {}
        exprs = selector.get("matchExpressions") or []
    else:
        match, exprs = selector, []
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for e in exprs:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def namespace_of(obj: Obj) -> str | None:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return str(ns) if ns else None


def name_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))
