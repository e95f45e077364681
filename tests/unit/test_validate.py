"""validate: the prepared splits against the model's declared input schema and task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.data import Split, load_splits, save_split
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
    for expected in (
        "NaN or inf",
        "px_0_1 spans [0, 99] outside [0, 16]",
        "unknown labels [12]",
        "both val and test",
    ):
        assert expected in err, err
    assert "4 violation(s)" in err
    assert not (workdir / "reports" / "validation.json").exists()


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
    assert "test: 1 row(s) out of the declared input range: mean smoothness spans" in err
    assert "outside [0, 0.25]" in err
