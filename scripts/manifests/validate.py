"""Render a target and run every check on what it renders; place each finding in a source file."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from scripts.manifests import (
    alerts,
    analysis,
    kubeconform,
    metric_refs,
    network,
    platform_wiring,
    policy,
    references,
)
from scripts.manifests.vocabulary import REPO_ROOT, Finding, Obj, Problem, TargetResult, object_id
from scripts.manifests.render import RenderError, render_overlay
from scripts.manifests.schema import SchemaValidator
from scripts.manifests.sources import (
    SourceDoc,
    kustomization_file,
    locate,
    source_documents,
    yaml_errors,
)


@dataclass
class Checks:
    """What to check against: the exported metric names and where they came from."""

    exported_metrics: set[str]
    metrics_source: str
    root: Path = REPO_ROOT
    promtool: bool = True
    rendered_targets: set[Path] = field(default_factory=set)
    schemas: SchemaValidator = field(default_factory=SchemaValidator)
    kubeconform: bool = True
    """Also run the real kubeconform on every rendered target (and compare verdicts)."""
    kubeconform_seconds: float = 0.0
    rendered: dict[Path, list[Obj]] = field(default_factory=dict)
    """Objects of every target rendered so far (cluster rules read the apps' overlays)."""

    documents: dict[Path, list[SourceDoc]] = field(default_factory=dict)

    def sources(self, target: Path) -> list[SourceDoc]:
        """The source documents of a target (parsed once a run: locating and rules share them)."""
        key = target.resolve()
        if key not in self.documents:
            self.documents[key] = source_documents(key)
        return self.documents[key]

    def render(self, target: Path) -> list[Obj]:
        """A target's objects: from this run when it rendered them already, else rendered now."""
        key = target.resolve()
        if key not in self.rendered:
            self.rendered[key] = render_overlay(key)
        return self.rendered[key]


def validate_objects(objects: list[Obj], target: Path, checks: Checks) -> list[Finding]:
    """Every check on one target's rendered objects (order: schema first, then semantics)."""
    findings: list[Finding] = []
    for obj in objects:
        findings += checks.schemas.validate(obj)
    findings += policy.check_policy(objects)
    findings += references.check_selectors(objects)
    findings += references.check_object_refs(objects)
    findings += references.check_release_image(objects, target, checks.root)
    findings += references.check_applicationsets(objects, checks.rendered_targets, checks.root)
    findings += network.check_peer_selectors(objects, checks.sources(target))
    findings += network.check_istio(objects)
    findings += platform_wiring.check_platform(objects, checks.render, checks.root)
    findings += analysis.check_steps(objects)
    findings += analysis.check_references(objects)
    findings += analysis.check_templates(objects)
    findings += metric_refs.check_metrics(objects, checks.exported_metrics)
    if checks.promtool:
        findings += alerts.check_rules(objects)
    return findings


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def validate_target(target: Path, checks: Checks) -> TargetResult:
    """Render one kustomization, validate it (kubeconform too), and map findings to files."""
    result = _validate_target(target, checks)
    if checks.kubeconform:
        apply_kubeconform([result], [target], checks)
    return result


def _validate_target(target: Path, checks: Checks) -> TargetResult:
    name = _rel(target, checks.root)
    result = TargetResult(name)
    start = time.perf_counter()
    try:
        result.objects = checks.render(target)
    except RenderError as exc:
        result.render_seconds = time.perf_counter() - start
        kfile = kustomization_file(target)
        result.problems.append(
            Problem("render", name, _rel(kfile or target, checks.root), "", "", str(exc))
        )
        for path, obj, where, message in yaml_errors(source_documents(target)):
            result.problems.append(
                Problem("render", name, _rel(path, checks.root), obj, where, message)
            )
        return result
    result.render_seconds = time.perf_counter() - start
    start = time.perf_counter()
    findings = validate_objects(result.objects, target, checks)
    docs = checks.sources(target)
    for f in findings:
        file = locate(f.obj, f.field, docs, target, checks.root)
        result.problems.append(Problem(f.check, name, file, object_id(f.obj), f.field, f.message))
    result.validate_seconds = time.perf_counter() - start
    return result


def validate_all(targets: list[Path], checks: Checks) -> list[TargetResult]:
    checks.rendered_targets = {t.resolve() for t in targets}
    results = [_validate_target(t, checks) for t in targets]
    if checks.kubeconform:
        apply_kubeconform(results, targets, checks)  # one kubeconform process for all targets
    return results


def apply_kubeconform(
    results: list[TargetResult], targets: list[Path], checks: Checks, compare: bool = True
) -> None:
    """Add kubeconform's findings to the results and, with `compare`, a `schema-agreement`
    problem for every object one of the two schema checks rejects and the other accepts."""
    start = time.perf_counter()
    rendered = {r.target: r.objects for r in results if r.objects}
    try:
        found = kubeconform.validate_rendered(rendered, checks.schemas.schema_dir)
    except kubeconform.KubeconformError as exc:
        for r in results:
            r.problems.append(Problem("kubeconform", r.target, r.target, "", "", str(exc)))
        return
    finally:
        checks.kubeconform_seconds += time.perf_counter() - start
    for result, target in zip(results, targets):
        if result.target not in found:
            continue
        docs = checks.sources(target)
        for f in found[result.target]:
            if "could not find schema" in f.message and f.obj is not None:
                # kubeconform does not say which of the two is wrong; the fast path's rule does
                api_version = str(f.obj.get("apiVersion"))
                known = checks.schemas.knows_api_version(api_version)
                f = Finding(f.check, f.obj, "kind" if known else "apiVersion", f.message)
            file = locate(f.obj, f.field, docs, target, checks.root)
            result.problems.append(
                Problem(f.check, result.target, file, object_id(f.obj), f.field, f.message)
            )
        if not compare:
            continue
        by_check: dict[str, dict[str, Problem]] = {"schema": {}, "kubeconform": {}}
        for p in result.problems:
            if p.check in by_check:
                by_check[p.check].setdefault(p.obj, p)
        for check, other in (("schema", "kubeconform"), ("kubeconform", "schema")):
            for obj, p in sorted(by_check[check].items()):
                if obj not in by_check[other]:
                    result.problems.append(
                        Problem(
                            "schema-agreement",
                            result.target,
                            p.file,
                            obj,
                            p.field,
                            f"{check} rejects this object and {other} accepts it: "
                            "scripts/gen_schemas.py or the fast path (scripts/manifests/schema.py)"
                            " no longer matches kubeconform",
                        )
                    )
