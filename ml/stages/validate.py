"""validate: check the prepared splits against the model's declared input schema and task, before
any training; every violation is listed at once.

Checks shape (the schema's feature count), dtype, per-feature value ranges, the label set, NaN/inf,
rows shared between splits (leakage) and class balance. On success it writes the JSON report the
train stage depends on; on any violation it exits non-zero and removes a stale report, so no
downstream stage can run on bad data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml.cli import StageError, run_stage, stage_parser
from ml.config import Params, load_params
from ml.data import SPLITS, Split, load_splits
from ml.io import write_json


def _out_of_range(name: str, X: np.ndarray, params: Params) -> list[str]:
    low, high = params.input.bounds()
    finite = np.isfinite(X)
    below = finite & (X < low)
    above = finite & (X > high)
    bad = np.flatnonzero((below | above).any(axis=0))
    if not len(bad):
        return []
    names = params.input.feature_names()
    shown = []
    for j in bad[:5]:
        values = X[finite[:, j], j]
        shown.append(
            f"{names[j]} spans [{values.min():g}, {values.max():g}] outside"
            f" [{low[j]:g}, {high[j]:g}]"
        )
    more = f" and {len(bad) - 5} more feature(s)" if len(bad) > 5 else ""
    rows = int((below | above).any(axis=1).sum())
    return [f"{name}: {rows} row(s) out of the declared input range: {'; '.join(shown)}{more}"]


def check_split(name: str, split: Split, params: Params) -> list[str]:
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
    finite = np.isfinite(X)
    if not finite.all():
        rows = np.unique(np.nonzero(~finite)[0])
        problems.append(
            f"{name}: {len(rows)} row(s) hold NaN or inf values (first rows: {rows[:5].tolist()})"
        )
    problems += _out_of_range(name, X, params)
    unknown = sorted(set(np.unique(y).tolist()) - set(range(classes)))
    if unknown:
        problems.append(
            f"{name}: unknown labels {unknown[:10]} (expected 0..{classes - 1}, task.classes)"
        )
    counts = np.bincount(np.clip(y, 0, classes - 1), minlength=classes)
    share = params.data.min_class_share
    thin = [params.task.classes[c] for c in range(classes) if counts[c] < share * len(y)]
    if thin:
        problems.append(
            f"{name}: classes {thin} hold less than {share:.0%} of the split (data.min_class_share)"
        )
    return problems


def check_leakage(splits: dict[str, Split]) -> list[str]:
    """A row present in two splits inflates the test score; report each pair of splits."""
    problems: list[str] = []
    rows = {
        name: {row.tobytes() for row in split.X}
        for name, split in splits.items()
        if split.X.ndim == 2
    }
    names = [name for name in SPLITS if name in rows]
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = len(rows[first] & rows[second])
            if shared:
                problems.append(f"leakage: {shared} row(s) appear in both {first} and {second}")
    return problems


def validate_splits(splits: dict[str, Split], params: Params) -> tuple[list[str], dict[str, Any]]:
    problems = [p for name, split in splits.items() for p in check_split(name, split, params)]
    problems += check_leakage(splits)
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
    problems, summary = validate_splits(load_splits(args.data), params)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise StageError(f"{args.data}: {len(problems)} violation(s):\n{listing}")
    write_json(report, {"passed": True, "violations": [], "splits": summary})
    rows = {name: s["rows"] for name, s in summary.items()}
    print(f"validate: all checks passed {rows}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("validate", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
