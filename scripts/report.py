"""`make report`: the merge-request report, as markdown, built with no CML installed.

Sections: release gates and headline metrics of this branch against the target branch (from the
real `dvc metrics diff`), the per-class table, the evaluation figures, the model card's evaluation,
what changed in the rendered manifests per overlay, and the canary rehearsal's verdict and
timeline. In CI, `cml comment update --watermark-title=...` posts the file; locally you read it.
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

from ml.config import load_params

HEADLINE = [
    ("metrics/metrics.json", "accuracy", "accuracy", True),
    ("metrics/metrics.json", "macro_f1", "macro F1", True),
    ("metrics/metrics.json", "roc_auc", "ROC-AUC", True),
    ("metrics/latency.json", "p50_ms", "p50 latency (ms)", False),
    ("metrics/latency.json", "p99_ms", "p99 latency (ms)", False),
]
FIGURES = ["confusion_matrix.png", "per_class.png", "roc_pr.png"]


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


def metrics_diff(repo: Path, base: str) -> dict[str, dict[str, dict[str, float | None]]]:
    """`dvc metrics diff <base> --all --json`: {file: {metric: {old, new, diff}}}."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "diff", base, "--all", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"report: dvc metrics diff {base} failed: {result.stderr.strip()}")
    parsed: dict[str, dict[str, dict[str, float | None]]] = json.loads(result.stdout or "{}")
    # dvc answers {} with exit 0 outside a DVC repo or when no metrics file exists: without this
    # check the report would show dashes and call every gate failed
    missing = sorted({path for path, *_ in HEADLINE} - set(parsed))
    if missing:
        raise SystemExit(
            f"report: dvc metrics diff {base} found no {', '.join(missing)} in {repo}"
            " (run `make pipeline` first; is this the repository root?)"
        )
    return parsed


def headline_rows(diff: dict[str, dict[str, dict[str, float | None]]]) -> list[MetricRow]:
    rows = []
    for path, key, label, higher in HEADLINE:
        entry = diff.get(path, {}).get(key, {})
        rows.append(MetricRow(label, _num(entry.get("old")), _num(entry.get("new")), higher))
    return rows


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


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


def gates_table(repo: Path, rows: list[MetricRow]) -> tuple[str, bool]:
    gates = load_params(repo / "params.yaml").gates
    by_label = {row.label: row.new for row in rows}
    checks = [
        ("accuracy", by_label["accuracy"], f">= {gates.min_accuracy}", gates.min_accuracy, True),
        (
            "p99 latency (ms)",
            by_label["p99 latency (ms)"],
            f"<= {gates.max_p99_latency_ms}",
            gates.max_p99_latency_ms,
            False,
        ),
    ]
    lines = ["| gate | measured | limit | result |", "| --- | ---: | ---: | --- |"]
    passed_all = True
    for name, value, limit_text, limit, at_least in checks:
        passed = value is not None and (value >= limit if at_least else value <= limit)
        passed_all &= passed
        lines.append(f"| {name} | {_fmt(value)} | {limit_text} | {'pass' if passed else 'FAIL'} |")
    return "\n".join(lines), passed_all


def read_at(repo: Path, ref: str, path: str) -> str | None:
    result = subprocess.run(
        ["git", "show", f"{ref}:{path}"], cwd=repo, capture_output=True, text=True
    )
    return result.stdout if result.returncode == 0 else None


def per_class_table(repo: Path, base: str) -> str:
    path = "reports/plots/per_class.csv"
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


def figures_section(repo: Path, out: Path) -> str:
    links = []
    for name in FIGURES:
        figure = repo / "reports" / "figures" / name
        if figure.is_file():
            links.append(f"![{name}]({os.path.relpath(figure, out.parent)})")
    return "\n\n".join(links) or "_no figures (run `make pipeline`)_"


def model_card_summary(repo: Path) -> str:
    card = repo / "models" / "model_card.md"
    if not card.is_file():
        return "_no model card (run `make pipeline`)_"
    text = card.read_text()
    start = text.find("## Evaluation")
    end = text.find("## Limits")
    summary = text[start:end].strip() if start >= 0 else text[:800]
    return summary.replace("## ", "### ")  # nested under the report's own section


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


def rehearsal_section(repo: Path) -> str:
    found = repo / "reports" / "rehearsal" / "rehearsal.md"
    if not found.is_file():
        return "_not run: `make rehearse` writes reports/rehearsal/rehearsal.md_"
    return found.read_text().strip()


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


def build_report(repo: Path, base: str, out: Path) -> tuple[str, bool]:
    base = existing_base(repo, base)
    rows = headline_rows(metrics_diff(repo, base))
    gates, gates_pass = gates_table(repo, rows)
    verdict = "all release gates pass" if gates_pass else "**a release gate fails**"
    sections = [
        f"# Model report: this branch vs `{base}`\n\n{verdict}.",
        "## Release gates\n\n" + gates,
        "## Metrics\n\n" + metrics_table(rows),
        "## Per class (test split)\n\n" + per_class_table(repo, base),
        "## Figures\n\n" + figures_section(repo, out),
        "## Model card\n\n" + model_card_summary(repo),
        "## Rendered manifests: what Argo CD would apply differently\n\n"
        + manifests_section(repo, base),
        "## Canary rehearsal\n\n" + rehearsal_section(repo),
    ]
    return "\n\n".join(sections) + "\n", gates_pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--base", default=None, help="git ref to compare with (default: MR target or main)"
    )
    parser.add_argument("--repo", default=".")
    parser.add_argument("--out", default="reports/mr/report.md")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    out = (repo / args.out).resolve()
    started = time.perf_counter()
    text, gates_pass = build_report(repo, args.base or default_base(), out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"report: wrote {out} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0 if gates_pass else 1


if __name__ == "__main__":
    raise SystemExit(main())
