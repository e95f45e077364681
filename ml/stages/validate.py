"""validate: check the prepared splits against the model's declared input schema and task, before
any training; every violation is listed at once.

Checks shape (the schema's feature count), dtype, per-feature value ranges, the label set, NaN/inf,
rows shared between splits (leakage) and class balance. Rows are named by their line in the source
(`<source>:<line>: <field>: <count> row(s) ...: lines a, b, c`, from prepare's lines.json), not by
a position inside a split. On success it writes the JSON report the train stage depends on; on
any violation it exits non-zero and removes a stale report, so no downstream stage can run on bad
data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml.cli import StageError, run_stage, stage_parser
from ml.config import Params, load_params
from ml.data import SPLITS, SourceLines, Split, load_lines, load_splits
from ml.io import read_json, write_json


def _listed(problems: list[str], more: int, what: str) -> list[str]:
    return problems + ([f"... and {more} more feature(s) with {what}"] if more > 0 else [])


def check_rows(
    X: np.ndarray, y: np.ndarray, lines: np.ndarray, where: SourceLines, params: Params
) -> list[str]:
    """Row-level checks (NaN/inf, declared ranges, labels) over rows from one source, each named
    `<source>:<line>: <field>: <count> row(s) ...: lines a, b, c`, first offending line first."""
    order = np.argsort(lines, kind="stable")
    X, y, lines = X[order], y[order], lines[order]
    names = params.input.feature_names()
    low, high = params.input.bounds()
    finite = np.isfinite(X)
    problems: list[str] = []
    nonfinite = np.flatnonzero((~finite).any(axis=0))
    for j in nonfinite[:5]:
        rows = lines[~finite[:, j]]
        problems.append(
            f"{where.at(rows[0])}: {names[j]}: {len(rows)} row(s) with NaN or inf:"
            f" {where.where(rows)}"
        )
    problems = _listed(problems, len(nonfinite) - 5, "NaN or inf")
    outside = finite & ((X < low) | (X > high))
    ranged = np.flatnonzero(outside.any(axis=0))
    found: list[str] = []
    for j in ranged[:5]:
        rows, values = lines[outside[:, j]], X[outside[:, j], j]
        seen = (
            f"value {values[0]:g}"
            if values.min() == values.max()
            else f"values {values.min():g} to {values.max():g}"
        )
        found.append(
            f"{where.at(rows[0])}: {names[j]}: {len(rows)} row(s) outside the declared range"
            f" [{low[j]:g}, {high[j]:g}] ({seen}): {where.where(rows)}"
        )
    problems += _listed(found, len(ranged) - 5, "values out of range")
    classes = params.task.num_classes
    unknown = (y < 0) | (y >= classes)
    if unknown.any():
        rows = lines[unknown]
        problems.append(
            f"{where.at(rows[0])}: {params.data.label_column}: {len(rows)} row(s) with labels"
            f" {sorted(set(y[unknown].tolist()))[:10]} outside 0..{classes - 1}"
            f" (task.classes): {where.where(rows)}"
        )
    return problems


def check_split(name: str, split: Split, params: Params) -> list[str]:
    """Split-level checks: shape, dtypes, emptiness and class balance."""
    X, y = split.X, split.y
    features, classes = params.input.feature_count, params.task.num_classes
    problems: list[str] = []
    if X.ndim != 2 or X.shape[1] != features:
        return [f"{name}: X has shape {X.shape}, expected [n, {features}] (input schema)"]
    if y.shape != (X.shape[0],):
        return [f"{name}: y has shape {y.shape}, expected [{X.shape[0]}]"]
    if X.dtype != np.float32:
        problems.append(f"{name}: X dtype is {X.dtype}, expected float32")
    if y.dtype != np.int64:
        problems.append(f"{name}: y dtype is {y.dtype}, expected int64")
    if len(y) == 0:
        return problems + [f"{name}: split is empty"]
    counts = np.bincount(np.clip(y, 0, classes - 1), minlength=classes)
    share = params.data.min_class_share
    thin = [params.task.classes[c] for c in range(classes) if counts[c] < share * len(y)]
    if thin:
        problems.append(
            f"{name}: classes {thin} hold less than {share:.0%} of the split (data.min_class_share)"
        )
    return problems


def _sources(
    splits: dict[str, Split], lines: SourceLines | None, data: str
) -> list[tuple[SourceLines, list[str]]]:
    """Who names the rows of which splits: the source's lines for all of them when prepare
    recorded them, else each split file by its own row numbers."""
    if lines is not None:
        return [(lines, list(splits))]
    return [
        (SourceLines(f"{data}/{n}.npz", "row", {n: np.arange(len(s.y)) + 1}), [n])
        for n, s in splits.items()
    ]


def check_leakage(splits: dict[str, Split], lines: SourceLines | None = None) -> list[str]:
    """A row present in two splits inflates the test score; report each pair of splits."""
    problems: list[str] = []
    rows = {
        name: [row.tobytes() for row in split.X]
        for name, split in splits.items()
        if split.X.ndim == 2
    }
    names = [name for name in SPLITS if name in rows]
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            earlier = set(rows[first])
            shared = np.flatnonzero([row in earlier for row in rows[second]])
            if not len(shared):
                continue
            where = f" ({second}: {lines.where(lines.splits[second][shared])})" if lines else ""
            problems.append(
                f"leakage: {len(shared)} row(s) appear in both {first} and {second}{where}"
            )
    return problems


def validate_splits(
    splits: dict[str, Split], params: Params, lines: SourceLines | None = None, data: str = "data"
) -> tuple[list[str], dict[str, Any]]:
    problems = [p for name, split in splits.items() for p in check_split(name, split, params)]
    shaped = {
        n: s
        for n, s in splits.items()
        if s.X.ndim == 2 and s.X.shape[1] == params.input.feature_count and s.y.shape == (len(s.X),)
    }
    for where, names in _sources(shaped, lines if len(shaped) == len(splits) else None, data):
        problems += check_rows(
            np.concatenate([shaped[n].X for n in names]),
            np.concatenate([shaped[n].y for n in names]),
            np.concatenate([where.splits[n] for n in names]),
            where,
            params,
        )
    problems += check_leakage(splits, lines)
    classes = params.task.num_classes
    summary = {
        name: {
            "rows": int(len(split.y)),
            "class_counts": np.bincount(
                split.y[(split.y >= 0) & (split.y < classes)], minlength=classes
            ).tolist(),
        }
        for name, split in splits.items()
    }
    return problems, summary


def _main(argv: Sequence[str] | None) -> None:
    parser = stage_parser(__doc__ or "validate")
    parser.add_argument("--data", required=True, help="directory with the prepared splits")
    parser.add_argument("--report", required=True, help="JSON report written on success")
    args = parser.parse_args(argv)
    params = load_params(args.params, args.shared_params)
    report = Path(args.report)
    report.unlink(missing_ok=True)  # a stale success report must not outlive a failing check
    splits = load_splits(args.data)
    problems, summary = validate_splits(splits, params, load_lines(args.data, splits), args.data)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        try:  # name the data the splits came from (prepare's meta.json)
            source = f" (split from {read_json(Path(args.data) / 'meta.json')['source']})"
        except (OSError, ValueError, KeyError):
            source = ""
        raise StageError(f"{args.data}{source}: {len(problems)} violation(s):\n{listing}")
    write_json(report, {"passed": True, "violations": [], "splits": summary})
    rows = {name: s["rows"] for name, s in summary.items()}
    print(f"validate: all checks passed {rows}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("validate", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
