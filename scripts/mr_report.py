"""`make report`: the merge-request report, as markdown, built with no CML installed.

One section per model whose pipeline or app changed against the target branch (the deliver set of
scripts/models.py; every model when none changed, e.g. on main): its release-gate verdict as the
register stage recorded it (`metrics/release.json`, never decided again here), headline
metrics and baselines against the target branch (from the real `dvc metrics diff`), the per-class
table, the evaluation figures, the model card's evaluation and the canary rehearsal's verdict.
Then what changed in the rendered manifests per overlay. In CI, `cml comment update
--watermark-title=...` posts the file; locally you read it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.catalog import Catalog, ModelEntry, load_catalog
from ml.registration import (
    GateResult,
    RecordError,
    ReleaseVerdict,
    read_best_record,
    read_release_verdict,
)

HEADLINE = [
    ("accuracy", "accuracy", True),
    ("macro_f1", "macro F1", True),
    ("roc_auc", "ROC-AUC", True),
    ("recall", "recall (positive class)", True),
    ("precision", "precision (positive class)", True),
]
FIGURES = ["confusion_matrix.png", "per_class.png", "roc_pr.png", "thresholds.png"]
Diff = dict[str, dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class MetricRow:
    label: str
    old: float | None
    new: float | None
    higher_is_better: bool

    @property
    def delta(self) -> float | None:
        return None if self.old is None or self.new is None else self.new - self.old


def default_base() -> str:
    """The merge request's target branch in CI, else main."""
    target = os.environ.get("CI_MERGE_REQUEST_TARGET_BRANCH_NAME")
    return f"origin/{target}" if target else "main"


def metrics_path(entry: ModelEntry) -> str:
    return f"{entry.folder}/metrics/metrics.json"


def metrics_diff(repo: Path, base: str, entries: Sequence[ModelEntry]) -> Diff:
    """`dvc metrics diff <base> --all --json`: {file: {metric: {old, new, diff}}}."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "diff", base, "--all", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"report: dvc metrics diff {base} failed: {result.stderr.strip()}")
    parsed: Diff = json.loads(result.stdout or "{}")
    # dvc answers {} with exit 0 outside a DVC repo or when no metrics file exists: without this
    # check the report would show dashes and call every gate failed
    missing = sorted({metrics_path(e) for e in entries} - set(parsed))
    if missing:
        raise SystemExit(
            f"report: dvc metrics diff {base} found no {', '.join(missing)} in {repo}"
            " (run `make pipeline` first; is this the repository root?)"
        )
    return parsed


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def headline_rows(entry: ModelEntry, diff: Diff) -> list[MetricRow]:
    found = diff.get(metrics_path(entry), {})
    rows = [
        MetricRow(label, _num(found[key].get("old")), _num(found[key].get("new")), higher)
        for key, label, higher in HEADLINE
        if key in found
    ]
    for key in sorted(k for k in found if k.startswith("baselines.") and k.endswith(".accuracy")):
        name = key.split(".")[1].replace("_", " ")
        rows.append(
            MetricRow(
                f"baseline: {name} (accuracy)",
                _num(found[key].get("old")),
                _num(found[key].get("new")),
                True,
            )
        )
    return rows


def metrics_table(rows: list[MetricRow]) -> str:
    lines = ["| metric | target branch | this branch | delta |", "| --- | ---: | ---: | ---: |"]
    for row in rows:
        delta = row.delta
        arrow = ""
        if delta:
            arrow = " ✅" if (delta > 0) == row.higher_is_better else " 🔻"
        sign = "+" if delta and delta > 0 else ""
        lines.append(
            f"| {row.label} | {_fmt(row.old)} | {_fmt(row.new)} |"
            f" {sign}{_fmt(delta)}{arrow if delta else ''} |"
        )
    return "\n".join(lines)


def release_path(entry: ModelEntry) -> str:
    return f"{entry.folder}/metrics/release.json"


def gate_results(repo: Path, entry: ModelEntry) -> tuple[ReleaseVerdict, list[GateResult], str]:
    """What register recorded, never decided again here: the verdict of
    `metrics/release.json` (refused, naming the file, when missing or malformed) and the gates
    of the registration record (the latency gate where this machine registered the model)."""
    try:
        verdict = read_release_verdict(repo / release_path(entry))
    except RecordError as exc:
        raise SystemExit(f"report: {exc}") from None
    note = "latency: measured at registration on the registering machine; not recorded here"
    try:
        record = read_best_record(repo / entry.folder / "registration.json")
    except RecordError as exc:
        return verdict, [], f"no gate details: {exc}"
    if record.latency is not None:
        note = f"latency: measured over {record.latency.samples} single-row predictions here"
    return verdict, record.all_gates, note


def gates_table(results: list[GateResult], note: str) -> str:
    lines = ["| gate | measured | limit | result |", "| --- | ---: | ---: | --- |"]
    for r in results:
        lines.append(
            f"| {r.gate} | {r.measured:.4f} | {r.limit:g} | {'pass' if r.passed else 'FAIL'} |"
        )
    return "\n".join(lines) + f"\n\n_{note}_"


def verdict_line(verdict: ReleaseVerdict, entry: ModelEntry) -> str:
    if verdict.gates_passed:
        said = "all release gates pass"
    else:
        said = f"**a release gate fails** ({verdict.failed_gates} failed)"
    released = "released" if verdict.released else "not released"
    return f"{said}; {released} (recorded by register in `{release_path(entry)}`)"


def read_at(repo: Path, ref: str, path: str) -> str | None:
    result = subprocess.run(
        ["git", "show", f"{ref}:{path}"], cwd=repo, capture_output=True, text=True
    )
    return result.stdout if result.returncode == 0 else None


def per_class_table(repo: Path, base: str, entry: ModelEntry) -> str:
    path = f"{entry.folder}/reports/plots/per_class.csv"
    new_text = (repo / path).read_text() if (repo / path).is_file() else None
    if new_text is None:
        return "_no per-class scores (run `make pipeline`)_"
    new = {r["class"]: r for r in csv.DictReader(io.StringIO(new_text))}
    old_text = read_at(repo, base, path)
    old = {r["class"]: r for r in csv.DictReader(io.StringIO(old_text))} if old_text else {}
    lines = [
        "| class | precision | recall | F1 | F1 on target | support |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, row in new.items():
        before = old.get(key, {}).get("f1", "-")
        lines.append(
            f"| {key} | {row['precision']} | {row['recall']} | {row['f1']} | {before} |"
            f" {row['support']} |"
        )
    return "\n".join(lines)


def figures_section(repo: Path, out: Path, entry: ModelEntry) -> str:
    links = []
    for name in FIGURES:
        figure = repo / entry.folder / "reports" / "figures" / name
        if figure.is_file():
            links.append(f"![{name}]({os.path.relpath(figure, out.parent)})")
    return "\n\n".join(links) or "_no figures (run `make pipeline`)_"


def model_card_summary(repo: Path, entry: ModelEntry) -> str:
    card = repo / entry.folder / "model_card.md"
    if not card.is_file():
        return "_no model card (run `make pipeline`)_"
    text = card.read_text()
    start = text.find("## Evaluation")
    end = text.find("## Release gates")
    summary = text[start:end].strip() if start >= 0 else text[:800]
    return summary.replace("## ", "#### ")  # nested under the report's model section


def manifests_section(repo: Path, base: str) -> str:
    from scripts.manifests.diff import diff_refs, diff_table

    try:
        diffs = diff_refs(base, "HEAD", root=repo)
    except (subprocess.CalledProcessError, OSError) as error:
        return f"_manifest diff unavailable: {error}_"
    changed = [d for d in diffs if d.status != "unchanged"]
    if not changed:
        return f"No rendered manifest changes in {len(diffs)} targets."
    return "```\n" + diff_table(changed) + "\n```"


def rehearsal_section(repo: Path, entry: ModelEntry) -> str:
    found = repo / "reports" / "rehearsal" / entry.name / "rehearsal.md"
    if not found.is_file():
        return f"_not run: `make rehearse MODEL={entry.name}` writes {found.relative_to(repo)}_"
    return found.read_text().strip().replace("\n# ", "\n#### ").replace("\n## ", "\n#### ")


def existing_base(repo: Path, base: str) -> str:
    """A fork may have no `main` (or no remote yet): compare with HEAD then, and say so."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"],
        cwd=repo,
        capture_output=True,
    )
    if found.returncode == 0:
        return base
    print(f"report: base {base!r} not found; comparing with HEAD", file=sys.stderr)
    return "HEAD"


def changed_models(repo: Path, catalog: Catalog, base: str) -> tuple[list[ModelEntry], str]:
    """The models to report on: the CI plan's (DELIVER_MODELS), else those whose folder or app
    differ from the base (the working tree included), else every model."""
    from scripts.models import affected_models, catalog_at, plan_variables

    planned = plan_variables(os.environ).get("DELIVER_MODELS")
    if planned is not None and planned.strip():
        return catalog.select(planned), "the models this pipeline delivers"
    merge_base = subprocess.run(
        ["git", "merge-base", base, "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "diff", "--name-only", merge_base or base],
        cwd=repo,
        capture_output=True,
        text=True,
    ).stdout.split()
    found = affected_models(changed, catalog, catalog_at(repo, merge_base or base)).deliver
    if found:
        return catalog.select(" ".join(found)), "the models whose pipeline or app changed"
    return list(catalog.entries), "no model changed: every model, as it is"


def model_section(
    repo: Path, base: str, out: Path, entry: ModelEntry, diff: Diff
) -> tuple[str, bool]:
    verdict, results, note = gate_results(repo, entry)
    parts = [
        f"## {entry.name} (app `{entry.app}`, `{entry.folder}`)\n\n"
        f"{verdict_line(verdict, entry)}.",
        "### Release gates\n\n" + gates_table(results, note),
        "### Metrics\n\n" + metrics_table(headline_rows(entry, diff)),
        "### Per class (test split)\n\n" + per_class_table(repo, base, entry),
        "### Figures\n\n" + figures_section(repo, out, entry),
        "### Model card\n\n" + model_card_summary(repo, entry),
        "### Canary rehearsal\n\n" + rehearsal_section(repo, entry),
    ]
    return "\n\n".join(parts), verdict.gates_passed


def build_report(repo: Path, base: str, out: Path, names: str | None = None) -> tuple[str, bool]:
    base = existing_base(repo, base)
    catalog = load_catalog(repo / "models.yaml")
    if names:
        entries, why = catalog.select(names), "the models asked for"
    else:
        entries, why = changed_models(repo, catalog, base)
    diff = metrics_diff(repo, base, entries)
    sections, passed = [], True
    for entry in entries:
        text, ok = model_section(repo, base, out, entry, diff)
        sections.append(text)
        passed &= ok
    verdict = "all release gates pass" if passed else "**a release gate fails**"
    listed = ", ".join(f"`{e.name}`" for e in entries)
    head = f"# Model report: this branch vs `{base}`\n\n{verdict}. Models: {listed} ({why})."
    tail = "## Rendered manifests: what Argo CD would apply differently\n\n" + manifests_section(
        repo, base
    )
    return "\n\n".join([head, *sections, tail]) + "\n", passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--base", default=None, help="git ref to compare with (default: MR target or main)"
    )
    parser.add_argument("--repo", default=".")
    parser.add_argument("--out", default="reports/mr/report.md")
    parser.add_argument("--models", default=None, help="names of models.yaml (default: changed)")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    out = (repo / args.out).resolve()
    started = time.perf_counter()
    text, gates_pass = build_report(repo, args.base or default_base(), out, args.models)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"report: wrote {out} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0 if gates_pass else 1


if __name__ == "__main__":
    raise SystemExit(main())
