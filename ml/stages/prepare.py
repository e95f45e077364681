"""prepare: load the source data set and write a deterministic, stratified train/val/test split.

Sources: the bundled scikit-learn digits (default) or a user file (.csv, .parquet: a label column
plus 64 numeric pixel columns; .npz: arrays X [n, 64] or [n, 8, 8] and y [n]). Values are passed
through unchanged so the validate stage, not this one, judges NaNs, ranges and labels.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ml.cli import StageError, run_stage, stage_parser
from ml.config import DataParams, load_params
from ml.data import SPLITS, Split, save_split
from ml.io import atomic_path, sha256_arrays, write_json
from ml.model import FEATURES


def load_digits_source() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def _from_table(
    frame: pd.DataFrame, label_column: str, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    if label_column not in frame.columns:
        raise StageError(
            f"{path}: no label column {label_column!r} (columns: {list(frame.columns)[:8]}...)"
        )
    pixels = frame.drop(columns=[label_column])
    if pixels.shape[1] != FEATURES:
        raise StageError(
            f"{path}: expected {FEATURES} pixel columns besides {label_column!r},"
            f" found {pixels.shape[1]}"
        )
    non_numeric = [str(c) for c in pixels.columns if not pd.api.types.is_numeric_dtype(pixels[c])]
    if non_numeric:
        raise StageError(f"{path}: pixel columns must be numeric; not numeric: {non_numeric[:5]}")
    labels = frame[label_column]
    if not pd.api.types.is_numeric_dtype(labels):
        raise StageError(f"{path}: label column {label_column!r} must hold integers")
    return pixels.to_numpy(dtype=np.float32), _integer_labels(labels.to_numpy(), path)


def _integer_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise StageError(
                f"{path}: labels must be whole numbers (found NaN or fractional labels)"
            )
    elif labels.dtype.kind not in "iu":
        raise StageError(f"{path}: labels must be integers, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def _from_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "X" not in archive or "y" not in archive:
                raise StageError(
                    f"{path}: an .npz source needs arrays 'X' and 'y', has {archive.files}"
                )
            X, y = archive["X"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise StageError(f"{path}: unreadable .npz file: {error}") from None
    if (
        X.ndim < 2
        or int(np.prod(X.shape[1:])) != FEATURES
        or X.shape[0] != y.shape[0]
        or y.ndim != 1
    ):
        raise StageError(
            f"{path}: expected X [n, 64] or [n, 8, 8] and y [n], got X {X.shape}, y {y.shape}"
        )
    if X.dtype.kind not in "fiu":
        raise StageError(f"{path}: X must be numeric, got dtype {X.dtype}")
    return X.reshape(len(X), FEATURES).astype(np.float32), _integer_labels(y, path)


def load_source(data: DataParams, base: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (X float32 [n, 64], y int64 [n]) from the configured source."""
    if data.source == "digits":
        return load_digits_source()
    path = (base / data.source).resolve()
    if not path.is_file():
        raise StageError(f"{path}: data.source file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _from_table(pd.read_csv(path), data.label_column, path)
        if suffix == ".parquet":
            return _from_table(pd.read_parquet(path), data.label_column, path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise StageError(f"{path}: unreadable {suffix} file: {error}") from None
    if suffix == ".npz":
        return _from_npz(path)
    raise StageError(f"{path}: unsupported data file type {suffix!r} (use .csv, .parquet or .npz)")


def load_rows(data: DataParams, base: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """The source's rows ready to split: (X, y, duplicates removed); too few rows is an error."""
    X, y = load_source(data, base)
    if len(y) < 10:
        raise StageError(f"{data.source}: only {len(y)} rows; need at least 10 to split")
    return drop_duplicate_images(X, y)


def drop_duplicate_images(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep the first copy of each identical image so no image can land in two splits."""
    _, first = np.unique(X, axis=0, return_index=True)
    keep = np.sort(first)
    return X[keep], y[keep], len(X) - len(keep)


def split_data(X: np.ndarray, y: np.ndarray, data: DataParams, seed: int) -> dict[str, Split]:
    """Deterministic split; stratified when every class has enough rows, else plain shuffled."""
    _, counts = np.unique(y, return_counts=True)
    stratify = counts.min() >= 3
    indices = np.arange(len(y))
    rest, test = train_test_split(
        indices, test_size=data.test_size, random_state=seed, stratify=y if stratify else None
    )
    val_share = data.val_size / (1.0 - data.test_size)
    train, val = train_test_split(
        rest, test_size=val_share, random_state=seed, stratify=y[rest] if stratify else None
    )
    return {name: Split(X[idx], y[idx]) for name, idx in zip(SPLITS, (train, val, test))}


def _main(argv: Sequence[str] | None) -> None:
    parser = stage_parser(__doc__ or "prepare")
    parser.add_argument(
        "--out", required=True, help="directory for train/val/test .npz + meta.json"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    X, y, duplicates = load_rows(params.data, Path(args.params).resolve().parent)
    splits = split_data(X, y, params.data, params.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        with atomic_path(out / f"{name}.npz") as tmp:
            save_split(tmp, split)
    meta: dict[str, Any] = {
        "source": params.data.source,
        "rows": int(len(y)),
        "duplicates_removed": duplicates,
        "split_rows": {name: int(len(split.y)) for name, split in splits.items()},
        "data_hash": sha256_arrays(*(a for s in splits.values() for a in (s.X, s.y))),
    }
    write_json(out / "meta.json", meta)
    print(
        f"prepare: {meta['rows']} rows -> {meta['split_rows']} (data hash {meta['data_hash'][:12]})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("prepare", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
