"""Prepared-data format: one .npz per split with X float32 [n, 64] and y int64 [n]."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.cli import StageError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    X: np.ndarray
    y: np.ndarray


def save_split(path: Path, split: Split) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, X=split.X, y=split.y)


def load_split(directory: str | Path, name: str) -> Split:
    """Load one split; a missing or corrupt file is a StageError naming the file."""
    path = Path(directory) / f"{name}.npz"
    try:
        with np.load(path, allow_pickle=False) as archive:
            return Split(X=archive["X"], y=archive["y"])
    except FileNotFoundError:
        raise StageError(f"{path}: missing (run the prepare stage first)") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise StageError(f"{path}: unreadable split file: {error}") from None


def load_splits(directory: str | Path) -> dict[str, Split]:
    return {name: load_split(directory, name) for name in SPLITS}
