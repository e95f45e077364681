"""prepare: load the model's source data and write a deterministic, stratified train/val/test split.

Sources (`data.source`, see the model's params.yaml):
- `sklearn:<name>`: a data set bundled with scikit-learn (digits, breast_cancer, wine, iris...),
  no download; tabular features are taken by the names the input schema declares;
- a `.csv` / `.parquet` file: the label column (`data.label_column`; integers 0..C-1 or the class
  names of `task.classes`) plus, for tabular inputs, exactly the declared feature columns (any
  order) or, for image inputs, height x width numeric columns in row-major order;
- an `.npz` file: arrays X [n, features] (or [n, height, width]) and y [n].
Values pass through unchanged: the validate stage, not this one, judges NaNs, ranges and labels.
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
from ml.config import DataParams, Params, load_params
from ml.data import SPLITS, Split, save_split
from ml.io import atomic_path, sha256_arrays, write_json
from ml.schema import ImageInput, TabularInput, TaskSpec

SKLEARN_PREFIX = "sklearn:"


def load_sklearn_source(
    name: str, schema: ImageInput | TabularInput
) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets

    loader = getattr(sklearn.datasets, f"load_{name}", None)
    if loader is None or not name.isidentifier():
        raise StageError(
            f"data.source sklearn:{name}: scikit-learn bundles no data set {name!r}"
            " (e.g. digits, breast_cancer, wine, iris)"
        )
    bunch = loader()
    X = np.asarray(bunch.data, dtype=np.float32)
    if isinstance(schema, TabularInput):
        available = [str(n) for n in getattr(bunch, "feature_names", [])]
        missing = [n for n in schema.feature_names() if n not in available]
        if missing:
            raise StageError(
                f"data.source sklearn:{name}: no feature(s) {missing[:5]} (it has {available[:8]}"
                f"{'...' if len(available) > 8 else ''}); input.features must name its columns"
            )
        X = X[:, [available.index(n) for n in schema.feature_names()]]
    return X, _integer_labels(np.asarray(bunch.target), Path(f"sklearn:{name}"))


def _labels_from_column(labels: pd.Series, task: TaskSpec, path: Path) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(labels):
        return _integer_labels(labels.to_numpy(), path)
    names = labels.astype(str)
    unknown = sorted(set(names) - set(task.classes))
    if unknown:
        raise StageError(
            f"{path}: label values {unknown[:5]} are neither integers nor class names of"
            f" task.classes {task.classes}"
        )
    mapped: np.ndarray = names.map({n: i for i, n in enumerate(task.classes)}).to_numpy(np.int64)
    return mapped


def _from_table(frame: pd.DataFrame, params: Params, path: Path) -> tuple[np.ndarray, np.ndarray]:
    label_column, schema = params.data.label_column, params.input
    if label_column not in frame.columns:
        raise StageError(
            f"{path}: no label column {label_column!r} (columns: {list(frame.columns)[:8]}...)"
        )
    features = frame.drop(columns=[label_column])
    if isinstance(schema, TabularInput):
        declared = schema.feature_names()
        missing = [n for n in declared if n not in features.columns]
        extra = [str(c) for c in features.columns if c not in declared]
        if missing or extra:
            raise StageError(
                f"{path}: columns differ from input.features: missing {missing[:5]},"
                f" undeclared {extra[:5]}"
            )
        features = features[declared]
    elif features.shape[1] != schema.feature_count:
        raise StageError(
            f"{path}: expected {schema.feature_count} pixel columns ({schema.shape[0]}x"
            f"{schema.shape[1]}) besides {label_column!r}, found {features.shape[1]}"
        )
    non_numeric = [
        str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])
    ]
    if non_numeric:
        raise StageError(f"{path}: feature columns must be numeric; not numeric: {non_numeric[:5]}")
    labels = _labels_from_column(frame[label_column], params.task, path)
    return features.to_numpy(dtype=np.float32), labels


def _integer_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise StageError(
                f"{path}: labels must be whole numbers (found NaN or fractional labels)"
            )
    elif labels.dtype.kind not in "iu":
        raise StageError(f"{path}: labels must be integers, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def _from_npz(path: Path, features: int) -> tuple[np.ndarray, np.ndarray]:
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
        or int(np.prod(X.shape[1:])) != features
        or X.shape[0] != y.shape[0]
        or y.ndim != 1
    ):
        raise StageError(
            f"{path}: expected X with {features} values per row and y [n], got X {X.shape},"
            f" y {y.shape}"
        )
    if X.dtype.kind not in "fiu":
        raise StageError(f"{path}: X must be numeric, got dtype {X.dtype}")
    return X.reshape(len(X), features).astype(np.float32), _integer_labels(y, path)


def load_source(params: Params, base: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (X float32 [n, features], y int64 [n]) from the configured source."""
    source = params.data.source
    if source.startswith(SKLEARN_PREFIX):
        return load_sklearn_source(source[len(SKLEARN_PREFIX) :], params.input)
    path = (base / source).resolve()
    if not path.is_file():
        raise StageError(f"{path}: data.source file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _from_table(pd.read_csv(path), params, path)
        if suffix == ".parquet":
            return _from_table(pd.read_parquet(path), params, path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise StageError(f"{path}: unreadable {suffix} file: {error}") from None
    if suffix == ".npz":
        return _from_npz(path, params.input.feature_count)
    raise StageError(f"{path}: unsupported data file type {suffix!r} (use .csv, .parquet or .npz)")


def load_rows(params: Params, base: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """The source's rows ready to split: (X, y, duplicates removed); too few rows is an error."""
    X, y = load_source(params, base)
    if len(y) < 10:
        raise StageError(f"{params.data.source}: only {len(y)} rows; need at least 10 to split")
    return drop_duplicate_rows(X, y)


def drop_duplicate_rows(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep the first copy of each identical row so no row can land in two splits."""
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
    params = load_params(args.params, args.shared_params)
    X, y, duplicates = load_rows(params, Path(args.params).resolve().parent)
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
