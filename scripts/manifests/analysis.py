"""Argo Rollouts analysis: what a Rollout references, and AnalysisTemplate specs the controller
would reject or mis-evaluate (docs/ROLLOUTS.md: invalid specs put the run in Error, an empty result
makes `result[0]` raise, NaN makes every comparison false)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator

from scripts.manifests.vocabulary import Finding, Obj
from scripts.rehearsal.analysis import AnalysisSpecError, metric_spec_problems
from scripts.rehearsal.canary import field_path_value, read_steps
from scripts.rehearsal.expr import template_condition_problem

TEMPLATE_KINDS = ("AnalysisTemplate", "ClusterAnalysisTemplate")
_PLACEHOLDER = re.compile(r"{{\s*([^}]*?)\s*}}")


@dataclass(frozen=True)
class AnalysisRef:
    """One use of analysis templates by a Rollout: where, which templates, which args."""

    field: str
    templates: list[tuple[str, bool]]
    args: list[dict[str, Any]]


def analysis_refs(rollout: Obj) -> list[AnalysisRef]:
    """Every step analysis and the background analysis of a Rollout's canary strategy.

    The steps come from the rehearsal's one step reader (`read_steps`), so both tools see the
    same analysis steps; a step it refuses is reported by `check_steps`, not read here."""
    canary = (((rollout.get("spec") or {}).get("strategy") or {}).get("canary")) or {}
    blocks: list[tuple[str, Any]] = [
        (f"{step.field}.analysis", step.body)
        for step in read_steps(rollout)
        if step.kind == "analysis" and step.problem is None
    ]
    if isinstance(canary.get("analysis"), dict):
        blocks.append(("spec.strategy.canary.analysis", canary["analysis"]))
    refs: list[AnalysisRef] = []
    for field, block in blocks:
        templates = [
            (str(t.get("templateName", "")), bool(t.get("clusterScope")))
            for t in block.get("templates") or []
            if isinstance(t, dict)
        ]
        args = [a for a in block.get("args") or [] if isinstance(a, dict)]
        refs.append(AnalysisRef(field, templates, args))
    return refs


def check_steps(objects: list[Obj]) -> Iterator[Finding]:
    """Canary steps the controller would refuse (and so the rehearsal does): one kind per step,
    setWeight in 0..100, a pause duration it can parse, an analysis step with templates."""
    for rollout in (o for o in objects if o.get("kind") == "Rollout"):
        for step in read_steps(rollout):
            if step.problem is not None:
                yield Finding("analysis", rollout, step.field, step.problem)


def resolve_static_args(rollout: Obj, args: list[dict[str, Any]]) -> dict[str, str | None]:
    """Values of a step's args as the controller resolves them before a run starts.

    `value`, and `fieldRef` into the Rollout itself through the rehearsal's resolver (the
    controller's rules, docs/ROLLOUTS.md); `podTemplateHashValue` is only known in a live cluster
    (None), and so is a path that resolves to nothing or to "" (nothing to judge a canary by).
    The canary rehearsal and the overlay tests use this to get the thresholds.
    """
    out: dict[str, str | None] = {}
    for arg in args:
        name = str(arg.get("name"))
        if "value" in arg:
            out[name] = None if arg["value"] is None else str(arg["value"])
            continue
        field_ref = ((arg.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if not field_ref:
            out[name] = None
            continue
        try:
            value = field_path_value(rollout, str(field_ref))
        except AnalysisSpecError:
            value = ""
        out[name] = value or None
    return out


def check_references(objects: list[Obj]) -> Iterator[Finding]:
    """Referenced templates exist; required args are supplied; fieldRef args resolve."""
    templates = {
        (o.get("kind"), (o.get("metadata") or {}).get("name")): o
        for o in objects
        if o.get("kind") in TEMPLATE_KINDS
    }
    for rollout in (o for o in objects if o.get("kind") == "Rollout"):
        for ref in analysis_refs(rollout):
            supplied = {str(a.get("name")) for a in ref.args}
            for j, (name, cluster) in enumerate(ref.templates):
                kind = "ClusterAnalysisTemplate" if cluster else "AnalysisTemplate"
                field = f"{ref.field}.templates[{j}].templateName"
                template = templates.get((kind, name))
                if template is None:
                    yield Finding("reference", rollout, field, f"{kind} {name!r} does not exist")
                    continue
                for arg in (template.get("spec") or {}).get("args") or []:
                    if "value" in arg or "valueFrom" in arg:
                        continue
                    if arg.get("name") not in supplied:
                        yield Finding(
                            "reference",
                            rollout,
                            f"{ref.field}.args",
                            f"arg {arg.get('name')!r} required by {kind} {name!r} is not supplied",
                        )
            for k, arg in enumerate(ref.args):
                field = f"{ref.field}.args[{k}]"
                if "value" not in arg and "valueFrom" not in arg:
                    yield Finding(
                        "reference", rollout, field, "arg has neither value nor valueFrom"
                    )
                path = ((arg.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
                if path and resolve_static_args(rollout, [arg]).get(str(arg.get("name"))) is None:
                    yield Finding(
                        "reference",
                        rollout,
                        f"{field}.valueFrom.fieldRef.fieldPath",
                        f"{path!r} resolves to nothing on this Rollout",
                    )


def _check_condition(template: Obj, field: str, condition: str) -> Iterator[Finding]:
    # One home for what a condition may be: the rehearsal's condition language
    # (docs/ROLLOUTS.md), so a template that passes here is one the rehearsal can judge.
    problem = template_condition_problem(condition)
    if problem is not None:
        yield Finding("analysis", template, field, f"condition {problem}")


def _check_metric(
    template: Obj, i: int, metric: dict[str, Any], args: set[str]
) -> Iterator[Finding]:
    base = f"spec.metrics[{i}]"
    for placeholder in _PLACEHOLDER.findall(json.dumps(metric)):
        if not placeholder.startswith("args."):
            yield Finding(
                "analysis",
                template,
                base,
                f"template placeholder {{{{{placeholder}}}}} is not an arg",
            )
        elif placeholder[5:] not in args:
            yield Finding(
                "analysis", template, base, f"{{{{{placeholder}}}}} names an undeclared arg"
            )
    for key, message in metric_spec_problems(metric):
        yield Finding(
            "analysis", template, f"{base}.{key}", f"{message} (the run would go to Error)"
        )
    for key in ("successCondition", "failureCondition"):
        if isinstance(metric.get(key), str):
            yield from _check_condition(template, f"{base}.{key}", metric[key])


def check_templates(objects: list[Obj]) -> Iterator[Finding]:
    """AnalysisTemplate specs the controller would put in Error (the rehearsal's own rules, one
    home: scripts.rehearsal.analysis.metric_spec_problems), or conditions that mis-handle no-data:
    duplicate metric names, unknown placeholders, bad durations and limits."""
    for template in (o for o in objects if o.get("kind") in TEMPLATE_KINDS):
        spec = template.get("spec") or {}
        args = {str(a.get("name")) for a in spec.get("args") or [] if isinstance(a, dict)}
        seen: set[str] = set()
        for i, metric in enumerate(spec.get("metrics") or []):
            if not isinstance(metric, dict):
                continue
            name = str(metric.get("name"))
            if name in seen:
                yield Finding(
                    "analysis", template, f"spec.metrics[{i}].name", f"duplicate {name!r}"
                )
            seen.add(name)
            yield from _check_metric(template, i, metric, args)


def prometheus_queries(objects: list[Obj]) -> Iterator[tuple[Obj, str, str]]:
    """(template, field, PromQL) for every Prometheus metric of every analysis template."""
    for template in (o for o in objects if o.get("kind") in TEMPLATE_KINDS):
        for i, metric in enumerate((template.get("spec") or {}).get("metrics") or []):
            prom = ((metric or {}).get("provider") or {}).get("prometheus") or {}
            if isinstance(prom.get("query"), str):
                yield template, f"spec.metrics[{i}].provider.prometheus.query", prom["query"]
