"""validate: check the prepared splits before any training; every violation is listed at once.

Checks shape, dtype, value range, label set, NaN/inf, images shared between splits (leakage) and
class balance. On success it writes the JSON report the train stage depends on; on any violation it
exits non-zero and removes a stale report, so no downstream stage can run on bad data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml.cli import StageError, run_stage, stage_parser
from ml.config import DataParams, load_params
from ml.data import SPLITS, Split, load_splits
from ml.io import write_json
from ml.model import FEATURES


def check_split(name: str, split: Split, data: DataParams) -> list[str]:
    X, y = split.X, split.y
    problems: list[str] = []
    if X.ndim != 2 or X.shape[1] != FEATURES:
        return [f"{name}: X has shape {X.shape}, expected [n, {FEATURES}]"]
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
            f"{name}: {len(rows)} row(s) hold NaN or inf pixels (first rows: {rows[:5].tolist()})"
        )
    values = X[finite]
    if values.size and (values.min() < 0 or values.max() > data.pixel_max):
        problems.append(
            f"{name}: pixel values span [{values.min():g}, {values.max():g}],"
            f" outside [0, {data.pixel_max:g}] (data.pixel_max)"
        )
    unknown = sorted(set(np.unique(y).tolist()) - set(range(data.num_classes)))
    if unknown:
        problems.append(
            f"{name}: unknown labels {unknown[:10]} (expected 0..{data.num_classes - 1})"
        )
    counts = np.bincount(np.clip(y, 0, data.num_classes - 1), minlength=data.num_classes)
    thin = [c for c in range(data.num_classes) if counts[c] < data.min_class_share * len(y)]
    if thin:
        problems.append(
            f"{name}: classes {thin} hold less than {data.min_class_share:.0%} of the split"
            " (data.min_class_share)"
        )
    return problems


def check_leakage(splits: dict[str, Split]) -> list[str]:
    """An image present in two splits inflates the test score; report each pair of splits."""
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
                problems.append(f"leakage: {shared} image(s) appear in both {first} and {second}")
    return problems


def validate_splits(splits: dict[str, Split], data: DataParams) -> tuple[list[str], dict[str, Any]]:
    problems = [p for name, split in splits.items() for p in check_split(name, split, data)]
    problems += check_leakage(splits)
    summary = {
        name: {
            "rows": int(len(split.y)),
            "class_counts": np.bincount(
                split.y[(split.y >= 0) & (split.y < data.num_classes)], minlength=data.num_classes
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
    params = load_params(args.params)
    report = Path(args.report)
    report.unlink(missing_ok=True)  # a stale success report must not outlive a failing check
    problems, summary = validate_splits(load_splits(args.data), params.data)
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
