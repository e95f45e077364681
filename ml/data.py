"""Prepared-data format: one .npz per split with X float32 [n, features] and y int64 [n], and
`lines.json`: where each split's rows come from in the source (its CSV line, or its row number
for other sources), so a later check names the source line, not a position inside a split.

Splits are written byte for byte the same on every run (fixed zip timestamps), so a re-run of
prepare on unchanged inputs gives DVC the same hash and nothing downstream reruns.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.cli import StageError
from ml.io import read_json, write_json

SPLITS = ("train", "val", "test")
LINES_FILE = "lines.json"
# numpy's savez stamps each member with the current time; a fixed date keeps the bytes stable
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Split:
    X: np.ndarray
    y: np.ndarray


def save_split(path: Path, split: Split) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in (("X", split.X), ("y", split.y)):
            member = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            with archive.open(member, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)


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


@dataclass(frozen=True)
class SourceLines:
    """Each split's rows as positions in the source: `unit` is "line" (a CSV line) or "row"."""

    source: str
    unit: str
    splits: dict[str, np.ndarray]

    def where(self, lines: np.ndarray, limit: int = 10) -> str:
        """'lines 12, 40, 77' (the first `limit`, then '...')."""
        shown = ", ".join(str(int(n)) for n in lines[:limit])
        more = ", ..." if len(lines) > limit else ""
        return f"{self.unit}{'s' if len(lines) > 1 else ''} {shown}{more}"

    def at(self, line: int) -> str:
        """'data/mine.csv:12' for a CSV line, 'sklearn:digits row 12' otherwise."""
        return f"{self.source}:{line}" if self.unit == "line" else f"{self.source} row {line}"


def save_lines(directory: Path, source: str, unit: str, splits: dict[str, np.ndarray]) -> None:
    payload = {"source": source, "unit": unit, "splits": {n: a.tolist() for n, a in splits.items()}}
    write_json(directory / LINES_FILE, payload)


def load_lines(directory: str | Path, splits: dict[str, Split]) -> SourceLines | None:
    """The source lines of `splits`, or None when prepare wrote none or they no longer match the
    splits (then messages fall back to positions inside each split)."""
    try:
        payload = read_json(Path(directory) / LINES_FILE)
        lines = {n: np.asarray(payload["splits"][n], dtype=np.int64) for n in splits}
        source, unit = str(payload["source"]), str(payload["unit"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if any(lines[n].shape != (len(s.y),) for n, s in splits.items()):
        return None
    return SourceLines(source, unit, lines)


def load_splits(directory: str | Path) -> dict[str, Split]:
    return {name: load_split(directory, name) for name in SPLITS}


def class_interleaved(split: Split, num_classes: int) -> np.ndarray:
    """The split's rows ordered class 0, 1, ..., C-1, 0, 1, ... (until the smallest class runs
    out): any run of consecutive rows then has the same class mix, which is what a load generator
    needs so two instances walking the list see alike traffic."""
    by_class = [split.X[split.y == c] for c in range(num_classes)]
    present = [rows for rows in by_class if len(rows)]
    rounds = min(len(rows) for rows in present)
    return np.stack([rows[i] for i in range(rounds) for rows in present]).astype(np.float32)
