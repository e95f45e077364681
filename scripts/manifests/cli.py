"""Command line: `python -m scripts.manifests render|validate|diff|bench` (see __init__)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scripts.manifests import metric_refs, report
from scripts.manifests.diff import diff_refs, diff_table
from scripts.manifests.vocabulary import REPO_ROOT
from scripts.manifests.render import (
    RenderError,
    discover_targets,
    render_overlay,
    render_text,
    render_with_kubectl,
)
from scripts.manifests.vocabulary import TargetResult
from scripts.manifests.validate import Checks, apply_kubeconform, validate_all


def default_model() -> Path:
    """The first model of models.yaml: every model's service exports the same metric names."""
    from ml.catalog import load_catalog

    entry = load_catalog(REPO_ROOT / "models.yaml").entries[0]
    return REPO_ROOT / entry.folder / "model.onnx"


def resolve_metrics(args: argparse.Namespace) -> tuple[set[str], str, bool]:
    """(exported names, where they came from, live?) following the flags, else automatically:
    start ml.serving on the first model's model.onnx when both exist, else fall back to the
    contract."""
    if args.metrics_url:
        text = metric_refs.fetch_exposition(args.metrics_url)
        return metric_refs.exported_metric_names(text), f"live /metrics at {args.metrics_url}", True
    if args.metrics_file:
        text = Path(args.metrics_file).read_text()
        return (
            metric_refs.exported_metric_names(text),
            f"exposition file {args.metrics_file}",
            False,
        )
    model = Path(args.serve_model) if args.serve_model else default_model()
    if args.serve_model or (metric_refs.service_available() and model.is_file()):
        text = metric_refs.serve_and_fetch(model)
        return (
            metric_refs.exported_metric_names(text),
            f"live /metrics of ml.serving ({model})",
            True,
        )
    names = metric_refs.exported_metric_names(metric_refs.contract_exposition())
    why = "ml.serving missing" if not metric_refs.service_available() else f"no {model}"
    return names, f"docs/CONTRACTS.md metric table (NOT live: {why})", False


def _targets(paths: list[str]) -> list[Path]:
    return [Path(p).resolve() for p in paths] if paths else discover_targets()


def cmd_render(args: argparse.Namespace) -> int:
    for target in _targets(args.targets):
        try:
            text = render_text(target)
        except RenderError as exc:
            print(f"{target}: {exc}", file=sys.stderr)
            return 1
        if args.output:
            rel = target.relative_to(REPO_ROOT) if target.is_relative_to(REPO_ROOT) else target
            out = Path(args.output) / (str(rel).replace("/", "__") + ".yaml")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            print(f"wrote {out}")
        else:
            print(f"# ---- {target}")
            print(text, end="")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    exported, source, live = resolve_metrics(args)
    if args.require_live and not live:
        print(f"validate: --require-live, but metrics came from {source}", file=sys.stderr)
        return 1
    checks = Checks(
        exported, source, promtool=not args.no_promtool, kubeconform=not args.no_kubeconform
    )
    results = validate_all(_targets(args.targets), checks)
    print(report.table(results, source, checks.kubeconform_seconds if checks.kubeconform else None))
    if args.json:
        Path(args.json).write_text(report.dumps(report.as_json(results, source)))
    if args.junit:
        Path(args.junit).write_text(report.junit(results))
    return 0 if all(r.ok for r in results) else 1


def cmd_kubeconform(args: argparse.Namespace) -> int:
    """The real kubeconform alone on every rendered target (what `validate` also runs)."""
    targets = _targets(args.targets)
    results = []
    for target in targets:
        name = (
            target.relative_to(REPO_ROOT).as_posix()
            if target.is_relative_to(REPO_ROOT)
            else str(target)
        )
        try:
            results.append(TargetResult(name, objects=render_overlay(target)))
        except RenderError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
    checks = Checks(set(), "not checked")
    apply_kubeconform(results, targets, checks, compare=False)
    for r in results:
        for problem in r.problems:
            print(f"  [{problem.check}] {problem}")
    objects = sum(len(r.objects) for r in results)
    bad = sum(len(r.problems) for r in results)
    print(
        f"kubeconform {report.kubeconform_version()}: {len(results)} target(s), {objects} objects,"
        f" {bad} problem(s), {checks.kubeconform_seconds:.2f} s"
    )
    if args.junit:
        Path(args.junit).write_text(report.junit(results, checks=("kubeconform",)))
    return 0 if bad == 0 else 1


def cmd_diff(args: argparse.Namespace) -> int:
    diffs = diff_refs(args.ref_a, args.ref_b)
    print(diff_table(diffs))
    if args.json:
        Path(args.json).write_text(report.dumps([d.as_dict() for d in diffs]))
    if args.patch:
        Path(args.patch).write_text("".join(d.patch for d in diffs))
    return 1 if any(d.status == "error" for d in diffs) else 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Per-target render+validate times (best of --repeat), and kubectl kustomize for comparison."""
    exported = metric_refs.exported_metric_names(metric_refs.contract_exposition())
    source = "docs/CONTRACTS.md (bench does not start the service)"
    targets = _targets(args.targets)
    start = time.perf_counter()
    best = validate_all(targets, Checks(exported, source))
    cold = time.perf_counter() - start  # first pass: loads kustomize and schemas, runs promtool
    for _ in range(args.repeat - 1):
        again = validate_all(targets, Checks(exported, source))
        for i, r in enumerate(again):
            if (
                r.render_seconds + r.validate_seconds
                < best[i].render_seconds + best[i].validate_seconds
            ):
                best[i] = r
    wall = (time.perf_counter() - start) / args.repeat
    kubectl: dict[str, float] = {}
    if args.kubectl:
        for target, r in zip(targets, best):
            t0 = time.perf_counter()
            try:
                render_with_kubectl(target)
                kubectl[r.target] = time.perf_counter() - t0
            except RenderError:
                kubectl[r.target] = float("nan")
    print(f"{'target':48} {'render s':>9} {'validate s':>10} {'total s':>8} {'kubectl s':>9}")
    for r in best:
        k = f"{kubectl[r.target]:.2f}" if r.target in kubectl else "-"
        print(
            f"{r.target:48} {r.render_seconds:9.3f} {r.validate_seconds:10.3f} "
            f"{r.render_seconds + r.validate_seconds:8.3f} {k:>9}"
        )
    total = sum(r.render_seconds + r.validate_seconds for r in best)
    print(
        f"total render+validate: {total:.2f} s (best of {args.repeat}); wall per pass {wall:.2f} s"
    )
    print(f"first (cold) pass: {cold:.2f} s, with library and schema loading and promtool")
    if kubectl:
        print(f"kubectl kustomize render total: {sum(kubectl.values()):.2f} s (subprocess each)")
    ok = all(r.ok for r in best)
    verdict = "met" if cold <= args.budget else "MISSED"
    print(f"target <= {args.budget:.0f} s for a cold pass: {verdict}")
    return 0 if ok and cold <= args.budget else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.manifests", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("render", help="print (or write) the rendered YAML of targets")
    p.add_argument("targets", nargs="*", help="kustomization dirs (default: every overlay+cluster)")
    p.add_argument("-o", "--output", help="write one file per target into this directory")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("validate", help="render and validate; exit 1 on any problem")
    p.add_argument("targets", nargs="*")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--junit", help="write a JUnit XML report here")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--metrics-url", help="a running service's /metrics URL")
    src.add_argument("--serve-model", help="start `python -m ml.serving` on this ONNX file")
    src.add_argument("--metrics-file", help="a saved /metrics text exposition")
    p.add_argument("--require-live", action="store_true", help="fail unless metrics are live")
    p.add_argument("--no-promtool", action="store_true", help="skip promtool (faster local runs)")
    p.add_argument(
        "--no-kubeconform", action="store_true", help="skip the real kubeconform (fast path only)"
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("kubeconform", help="only the real kubeconform on rendered targets")
    p.add_argument("targets", nargs="*")
    p.add_argument("--junit", help="write a JUnit XML report here")
    p.set_defaults(func=cmd_kubeconform)

    p = sub.add_parser("diff", help="rendered differences per target between two git refs")
    p.add_argument("ref_a")
    p.add_argument("ref_b")
    p.add_argument("--json", help="write per-target differences (with patches) as JSON here")
    p.add_argument("--patch", help="write the unified diff here")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("bench", help="time render+validate per target (make bench-manifests)")
    p.add_argument("targets", nargs="*")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--budget", type=float, default=10.0, help="seconds allowed for one pass")
    p.add_argument("--kubectl", action="store_true", help="also time `kubectl kustomize`")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
