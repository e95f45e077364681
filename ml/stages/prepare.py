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
from ml.data import SPLITS, Split, save_lines, save_split
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


def _csv_line(index: int) -> int:
    """The source line of a CSV data row (1 is the header; records hold no embedded newline,
    which `_check_csv_shape` ensures by counting fields line by line)."""
    return index + 2


def _check_csv_shape(path: Path) -> None:
    """An empty file, a header without rows, or rows whose field count differs from the header's
    (a truncated file, a stray delimiter) are refused with their lines and counts; pandas would
    fill the missing fields with NaN and a later check would blame the values instead."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise StageError(f"{path}: empty file (no header, no rows)")
        bad: list[tuple[int, int]] = []
        rows = 0
        for record in reader:
            if not record:
                continue  # a blank line
            rows += 1
            if len(record) != len(header):
                bad.append((reader.line_num, len(record)))
    if rows == 0:
        raise StageError(
            f"{path}: line 1 is a header of {len(header)} column(s) and no row follows"
        )
    if bad:
        shown = ", ".join(f"line {line} has {n}" for line, n in bad[:5])
        raise StageError(
            f"{path}: {len(bad)} row(s) do not have the header's {len(header)} fields ({shown}"
            f"{', ...' if len(bad) > 5 else ''}): truncated or malformed file"
        )


def _non_numeric(features: pd.DataFrame, path: Path, where: Any) -> str | None:
    """'<file>: N cell(s) in M column(s) are not numbers; first: line L, column C: 'v'' or None."""
    cells, columns, first = 0, 0, ""
    for column in features.columns:
        values = features[column]
        if pd.api.types.is_numeric_dtype(values):
            continue
        parsed = pd.to_numeric(values, errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy() & values.notna().to_numpy())
        if not len(bad):
            continue
        cells, columns = cells + len(bad), columns + 1
        if not first:
            first = f"{where(int(bad[0]))}, column {column!r}: {values.iloc[bad[0]]!r}"
    if not cells:
        return None
    return f"{path}: {cells} cell(s) in {columns} column(s) are not numbers; first: {first}"


def _from_table(frame: pd.DataFrame, params: Params, path: Path) -> tuple[np.ndarray, np.ndarray]:
    label_column, schema = params.data.label_column, params.input
    where = (lambda i: f"line {_csv_line(i)}") if path.suffix.lower() == ".csv" else _row
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
    problem = _non_numeric(features, path, where)
    if problem:
        raise StageError(problem)
    missing_labels = np.flatnonzero(frame[label_column].isna().to_numpy())
    if len(missing_labels):
        lines = ", ".join(where(int(i)) for i in missing_labels[:5])
        raise StageError(
            f"{path}: {len(missing_labels)} row(s) have no {label_column!r} value ({lines}"
            f"{', ...' if len(missing_labels) > 5 else ''})"
        )
    labels = _labels_from_column(frame[label_column], params.task, path)
    return features.apply(pd.to_numeric).to_numpy(dtype=np.float32), labels


def _row(index: int) -> str:
    return f"row {index + 1}"


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
            _check_csv_shape(path)
            return _from_table(pd.read_csv(path), params, path)
        if suffix == ".parquet":
            return _from_table(pd.read_parquet(path), params, path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise StageError(f"{path}: unreadable {suffix} file: {error}") from None
    if suffix == ".npz":
        return _from_npz(path, params.input.feature_count)
    raise StageError(f"{path}: unsupported data file type {suffix!r} (use .csv, .parquet or .npz)")


def source_lines(source: str, rows: int) -> tuple[str, np.ndarray]:
    """Where each loaded row sits in the source, as messages name it: ("line", CSV line numbers)
    for a CSV, else ("row", 1-based row numbers). Carried through the split (`LINES_FILE`) so a
    later check names the source line, not a position inside a split."""
    if source.lower().endswith(".csv"):
        return "line", np.arange(rows, dtype=np.int64) + 2
    return "row", np.arange(rows, dtype=np.int64) + 1


def load_rows(params: Params, base: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The source's rows ready to split: (X, y, each row's source line, duplicates removed); too
    few rows is an error."""
    X, y = load_source(params, base)
    if len(y) < 10:
        raise StageError(f"{params.data.source}: only {len(y)} rows; need at least 10 to split")
    source = params.data.source
    unit, lines = source_lines(source, len(y))
    keep = unique_rows(X, y, source, lambda i: f"{unit} {lines[i]}", params.data)
    return X[keep], y[keep], lines[keep], len(y) - len(keep)


def unique_rows(
    X: np.ndarray, y: np.ndarray, source: str, where: Any, data: DataParams
) -> np.ndarray:
    """The indices of the first copy of each identical row (so no row can land in two splits),
    and say what was dropped: the count, the share and where the copies are. Identical features
    with different labels are an error (which label is right cannot be decided here), and so is
    a share of copies above `data.max_duplicate_share`."""
    _, first, inverse, counts = np.unique(
        X, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.reshape(-1)
    keep = np.sort(first)
    conflicts = []
    for group in np.flatnonzero(counts > 1):
        members = np.flatnonzero(inverse == group)
        if len(set(y[members].tolist())) > 1:
            conflicts.append(members)
    if conflicts:
        shown = "; ".join(
            " = ".join(f"{where(int(i))} (label {int(y[i])})" for i in members[:3])
            for members in conflicts[:3]
        )
        rows = sum(len(m) for m in conflicts)
        raise StageError(
            f"{source}: {len(conflicts)} set(s) of identical features carry different labels"
            f" ({rows} rows): {shown}{'; ...' if len(conflicts) > 3 else ''}. Fix the labels"
            " or remove the rows"
        )
    removed = len(X) - len(keep)
    if removed:
        repeats = np.setdiff1d(np.arange(len(X)), keep)
        shown = ", ".join(where(int(i)) for i in repeats[:5])
        share = removed / len(X)
        found = (
            f"{source}: {removed} duplicate row(s) ({share:.1%} of {len(X)}): {shown}"
            f"{', ...' if removed > 5 else ''} repeat earlier rows"
        )
        if share > data.max_duplicate_share:
            raise StageError(
                f"{found}; more than data.max_duplicate_share {data.max_duplicate_share:.1%}:"
                " a broken export or join, or rows that would leak between the splits. Remove"
                " the copies, or raise data.max_duplicate_share if they are genuine"
            )
        print(f"prepare: warning: {found}; each kept once")
    return keep


def split_indices(y: np.ndarray, data: DataParams, seed: int) -> dict[str, np.ndarray]:
    """Deterministic split of row indices; stratified when every class has enough rows, else
    plain shuffled."""
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
    return dict(zip(SPLITS, (train, val, test)))


def split_data(X: np.ndarray, y: np.ndarray, data: DataParams, seed: int) -> dict[str, Split]:
    return {name: Split(X[idx], y[idx]) for name, idx in split_indices(y, data, seed).items()}


def _main(argv: Sequence[str] | None) -> None:
    parser = stage_parser(__doc__ or "prepare")
    parser.add_argument(
        "--out", required=True, help="directory for train/val/test .npz + meta.json"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params, args.shared_params)
    X, y, lines, duplicates = load_rows(params, Path(args.params).resolve().parent)
    indices = split_indices(y, params.data, params.seed)
    splits = {name: Split(X[idx], y[idx]) for name, idx in indices.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        with atomic_path(out / f"{name}.npz") as tmp:
            save_split(tmp, split)
    unit = source_lines(params.data.source, 0)[0]
    save_lines(out, params.data.source, unit, {n: lines[idx] for n, idx in indices.items()})
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
