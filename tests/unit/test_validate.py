"""validate: the prepared splits against the model's declared input schema and task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.data import Split, load_lines, load_splits, save_split
from ml.stages import prepare, validate
from tests.unit.conftest import COMMON, model_workspace


@pytest.fixture
def prepared(workdir: Path) -> Path:
    assert prepare.main([*COMMON, "--out", "prepared"]) == 0
    return workdir / "prepared"


def rewrite(prepared: Path, name: str, X: np.ndarray, y: np.ndarray) -> None:
    save_split(prepared / f"{name}.npz", Split(X, y))


def run_validate() -> int:
    return validate.main([*COMMON, "--data", "prepared", "--report", "reports/validation.json"])


def test_clean_data_passes_and_writes_report(prepared: Path, workdir: Path) -> None:
    assert run_validate() == 0
    assert (workdir / "reports" / "validation.json").is_file()


def test_every_violation_is_listed_and_no_report_is_left(
    prepared: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_validate() == 0  # a stale success report exists now
    splits = load_splits(prepared)
    X, y = splits["train"].X.copy(), splits["train"].y.copy()
    X[3, 5] = np.nan
    X[4, 0] = np.inf
    X[7, 1] = 99.0
    y[0] = 12
    rewrite(prepared, "train", X, y)
    test = splits["test"]
    rewrite(
        prepared,
        "test",
        np.vstack([test.X, splits["val"].X[:2]]),
        np.concatenate([test.y, splits["val"].y[:2]]),
    )
    assert run_validate() == 1
    err = capsys.readouterr().err
    # the splits no longer match prepare's lines.json (rows were added): each split file is
    # named by its own row numbers instead
    for expected in (
        "prepared (split from sklearn:digits): 5 violation(s)",
        "prepared/train.npz row 4: px_0_5: 1 row(s) with NaN or inf: row 4",
        "prepared/train.npz row 5: px_0_0: 1 row(s) with NaN or inf: row 5",
        "prepared/train.npz row 8: px_0_1: 1 row(s) outside the declared range [0, 16]"
        " (value 99): row 8",
        "prepared/train.npz row 1: label: 1 row(s) with labels [12] outside 0..9",
        "leakage: 2 row(s) appear in both val and test",
    ):
        assert expected in err, err
    assert not (workdir / "reports" / "validation.json").exists()


def test_values_only_validate_catches_are_named_by_their_source_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18: a corrupt value prepare lets through (a range, an infinity, an unknown numeric
    label) is named by the source file and line, with a count, whatever split it landed in."""
    from sklearn.datasets import load_breast_cancer

    folder = model_workspace(tmp_path, "breast-cancer", data__source="mine.csv")
    monkeypatch.chdir(folder)
    bunch = load_breast_cancer()
    frame = pd.DataFrame(bunch.data, columns=[str(n) for n in bunch.feature_names])
    frame["label"] = bunch.target
    # data row i is CSV line i + 2 (line 1 is the header)
    frame.loc[[10, 38, 75], "mean radius"] = 1e6
    frame.loc[200, "worst area"] = np.inf
    frame.loc[300, "label"] = 7
    frame.to_csv(folder / "mine.csv", index=False)
    assert prepare.main([*COMMON, "--out", "prepared"]) == 0
    assert run_validate() == 1
    err = capsys.readouterr().err
    for expected in (
        "prepared (split from mine.csv): 3 violation(s)",
        "mine.csv:12: mean radius: 3 row(s) outside the declared range [0, 45] (value 1e+06):"
        " lines 12, 40, 77",
        "mine.csv:202: worst area: 1 row(s) with NaN or inf: line 202",
        "mine.csv:302: label: 1 row(s) with labels [7] outside 0..1 (task.classes): line 302",
    ):
        assert expected in err, err


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda X, y: (X.astype(np.float64), y), "X dtype is float64"),
        (lambda X, y: (X, y.astype(np.int32)), "y dtype is int32"),
        (lambda X, y: (X[:, :10], y), "expected [n, 64] (input schema)"),
        (lambda X, y: (X, y[:-1]), "y has shape"),
        (lambda X, y: (X[:0], y[:0]), "split is empty"),
        (lambda X, y: (X[y != 3], y[y != 3]), "classes ['3'] hold less than"),
    ],
)
def test_single_violations(
    prepared: Path, capsys: pytest.CaptureFixture[str], mutate: object, message: str
) -> None:
    split = load_splits(prepared)["val"]
    X, y = mutate(split.X, split.y)  # type: ignore[operator]
    rewrite(prepared, "val", X, y)
    assert run_validate() == 1
    assert message in capsys.readouterr().err


def test_missing_split_file(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (prepared / "val.npz").unlink()
    assert run_validate() == 1
    assert "val.npz: missing" in capsys.readouterr().err


def test_corrupt_split_file(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (prepared / "test.npz").write_bytes(b"garbage")
    assert run_validate() == 1
    assert "unreadable split file" in capsys.readouterr().err


def test_tabular_ranges_are_checked_per_feature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = model_workspace(tmp_path, "breast-cancer")
    monkeypatch.chdir(folder)
    assert prepare.main([*COMMON, "--out", "prepared"]) == 0
    split = load_splits(folder / "prepared")["test"]
    X = split.X.copy()
    X[2, 4] = 0.9  # mean smoothness is declared in [0, 0.25]; 0.9 fits every other range
    rewrite(folder / "prepared", "test", X, split.y)
    assert run_validate() == 1
    err = capsys.readouterr().err
    line = int(load_lines(folder / "prepared", load_splits(folder / "prepared")).splits["test"][2])
    assert (
        f"sklearn:breast_cancer row {line}: mean smoothness: 1 row(s) outside the declared range"
        " [0, 0.25] (value 0.9)"
    ) in err
