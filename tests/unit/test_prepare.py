"""prepare: bundled and own sources (image and tabular), split, and clear refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ml.config import load_params
from ml.data import load_lines, load_splits
from ml.io import read_json
from ml.stages import prepare
from tests.conftest import REPO
from tests.unit.conftest import COMMON, model_workspace, write_params


def digits_source() -> tuple[np.ndarray, np.ndarray]:
    params = load_params(REPO / "models/digits/params.yaml", REPO / "params.yaml")
    return prepare.load_sklearn_source("digits", params.input)


def digits_frame(rows: int = 300) -> pd.DataFrame:
    X, y = digits_source()
    frame = pd.DataFrame(X[:rows], columns=[f"px{i}" for i in range(64)])
    frame["label"] = y[:rows]
    return frame


def cancer_frame() -> pd.DataFrame:
    """The breast-cancer rows as a user's CSV would hold them: named columns, named labels."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    frame = pd.DataFrame(bunch.data, columns=[str(n) for n in bunch.feature_names])
    frame["label"] = [str(bunch.target_names[t]) for t in bunch.target]
    return frame


def run_prepare(workdir: Path, source: str | None = None, **overrides: Any) -> int:
    if source is not None or overrides:
        model = workdir.name
        write_params(workdir, model, **({"data__source": source} if source else {}), **overrides)
    return prepare.main([*COMMON, "--out", "prepared"])


@pytest.fixture
def cancer_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = model_workspace(tmp_path, "breast-cancer")
    monkeypatch.chdir(folder)
    return folder


def test_default_digits_split_is_stratified_and_complete(workdir: Path) -> None:
    assert run_prepare(workdir) == 0
    splits = load_splits(workdir / "prepared")
    assert sum(len(s.y) for s in splits.values()) == 1797
    assert {k: len(s.y) for k, s in splits.items()} == {"train": 1257, "val": 180, "test": 360}
    for split in splits.values():
        assert split.X.dtype == np.float32 and split.X.shape[1] == 64
        shares = np.bincount(split.y, minlength=10) / len(split.y)
        assert shares.min() > 0.08 and shares.max() < 0.12  # ~10% each: stratified
    meta = read_json(workdir / "prepared" / "meta.json")
    assert len(meta["data_hash"]) == 64 and meta["duplicates_removed"] == 0


def test_split_is_deterministic(workdir: Path) -> None:
    run_prepare(workdir)
    first = read_json(workdir / "prepared" / "meta.json")["data_hash"]
    run_prepare(workdir)
    assert read_json(workdir / "prepared" / "meta.json")["data_hash"] == first


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_sources(workdir: Path, suffix: str) -> None:
    frame = digits_frame()
    path = workdir / f"mine{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    assert run_prepare(workdir, path.name) == 0
    assert sum(len(s.y) for s in load_splits(workdir / "prepared").values()) == 300


def test_npz_source_with_image_shape(workdir: Path) -> None:
    X, y = digits_source()
    np.savez(workdir / "mine.npz", X=X[:200].reshape(-1, 8, 8), y=y[:200])
    assert run_prepare(workdir, "mine.npz") == 0


def test_duplicates_are_dropped(workdir: Path) -> None:
    frame = digits_frame(100)
    pd.concat([frame, frame.iloc[:10]]).to_csv(workdir / "dup.csv", index=False)
    assert run_prepare(workdir, "dup.csv", data__max_duplicate_share=0.1) == 0
    assert read_json(workdir / "prepared" / "meta.json")["duplicates_removed"] == 10


def _write(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return path.name


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.csv", lambda p: p.name, "not found"),
        ("corrupt.parquet", lambda p: _write(p, b"not parquet at all"), "unreadable .parquet"),
        ("corrupt.npz", lambda p: _write(p, b"PK\x03\x04garbage"), "unreadable .npz"),
        ("data.json", lambda p: _write(p, b"{}"), "unsupported data file type"),
        (
            "narrow.csv",
            lambda p: (digits_frame().iloc[:, 60:].to_csv(p, index=False), p.name)[1],
            "expected 64 pixel columns (8x8)",
        ),
        (
            "nolabel.csv",
            lambda p: (digits_frame().drop(columns=["label"]).to_csv(p, index=False), p.name)[1],
            "no label column",
        ),
        (
            "text.csv",
            lambda p: (digits_frame().assign(px3="x").to_csv(p, index=False), p.name)[1],
            "cell(s) in 1 column(s) are not numbers; first: line 2, column 'px3': 'x'",
        ),
        (
            "frac.csv",
            lambda p: (digits_frame().assign(label=0.5).to_csv(p, index=False), p.name)[1],
            "whole numbers",
        ),
        (
            "bad.npz",
            lambda p: (np.savez(p, X=np.zeros((20, 10)), y=np.zeros(20)), p.name)[1],
            "expected X",
        ),
        (
            "nokeys.npz",
            lambda p: (np.savez(p, a=np.zeros(3)), p.name)[1],
            "needs arrays 'X' and 'y'",
        ),
    ],
)
def test_bad_sources_fail_clearly_and_write_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], name: str, make: object, message: str
) -> None:
    source = make(workdir / name)  # type: ignore[operator]
    assert run_prepare(workdir, source) == 1
    err = capsys.readouterr().err
    assert err.startswith("prepare: error:") and message in err and name in err
    assert not (workdir / "prepared").exists()


def test_too_few_rows(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    digits_frame(5).to_csv(workdir / "tiny.csv", index=False)
    assert run_prepare(workdir, "tiny.csv") == 1
    assert "need at least 10" in capsys.readouterr().err


def test_bundled_tabular_source_takes_the_declared_features(cancer_dir: Path) -> None:
    assert run_prepare(cancer_dir) == 0
    splits = load_splits(cancer_dir / "prepared")
    assert sum(len(s.y) for s in splits.values()) == 569
    assert all(s.X.shape[1] == 30 for s in splits.values())
    assert set(np.unique(splits["train"].y)) == {0, 1}


def test_tabular_csv_with_reordered_columns_and_named_labels(cancer_dir: Path) -> None:
    frame = cancer_frame()
    frame[list(reversed(frame.columns))].to_csv(cancer_dir / "own.csv", index=False)
    assert run_prepare(cancer_dir, "own.csv") == 0
    own = load_splits(cancer_dir / "prepared")
    assert run_prepare(cancer_dir, "sklearn:breast_cancer") == 0
    bundled = load_splits(cancer_dir / "prepared")
    # same rows, same order of features, labels mapped by task.classes: the same split
    np.testing.assert_allclose(own["test"].X, bundled["test"].X, rtol=1e-6)
    np.testing.assert_array_equal(own["test"].y, bundled["test"].y)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["mean area"]), "missing ['mean area']"),
        (lambda f: f.assign(extra=1.0), "undeclared ['extra']"),
        (lambda f: f.assign(label="unknown"), "neither integers nor class names"),
    ],
)
def test_tabular_csv_refusals_name_the_column(
    cancer_dir: Path, capsys: pytest.CaptureFixture[str], change: Any, message: str
) -> None:
    change(cancer_frame()).to_csv(cancer_dir / "own.csv", index=False)
    assert run_prepare(cancer_dir, "own.csv") == 1
    err = capsys.readouterr().err
    assert message in err and "own.csv" in err
    assert not (cancer_dir / "prepared").exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [("sklearn:no_such_set", "bundles no data set"), ("sklearn:wine", "no feature(s)")],
)
def test_bundled_source_refusals(
    cancer_dir: Path, capsys: pytest.CaptureFixture[str], source: str, message: str
) -> None:
    assert run_prepare(cancer_dir, source) == 1
    assert message in capsys.readouterr().err


# -- issue 18: the source's file, line and counts; no silent data changes -------------------------


def test_an_empty_csv_and_a_header_only_csv_say_so(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "empty.csv").write_text("")
    assert run_prepare(workdir, "empty.csv") == 1
    assert "empty.csv: empty file (no header, no rows)" in capsys.readouterr().err
    digits_frame().iloc[:0].to_csv(workdir / "header.csv", index=False)
    assert run_prepare(workdir, "header.csv") == 1
    assert "header.csv: line 1 is a header of 65 column(s) and no row follows" in (
        capsys.readouterr().err
    )


def test_a_truncated_csv_names_the_short_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digits_frame(100).to_csv(workdir / "cut.csv", index=False)
    text = (workdir / "cut.csv").read_text()
    (workdir / "cut.csv").write_text(text[: len(text) - 60])  # cut inside the last row
    assert run_prepare(workdir, "cut.csv") == 1
    err = capsys.readouterr().err
    assert "cut.csv: 1 row(s) do not have the header's 65 fields (line 101 has" in err
    assert "truncated" in err and "whole numbers" not in err


def test_duplicates_are_reported_with_count_share_and_lines(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = digits_frame(100)
    pd.concat([frame, frame.iloc[:4]]).to_csv(workdir / "leak.csv", index=False)
    assert run_prepare(workdir, "leak.csv") == 0
    out = capsys.readouterr().out
    assert "4 duplicate row(s) (3.8% of 104): line 102, line 103, line 104, line 105" in out
    assert read_json(workdir / "prepared" / "meta.json")["duplicates_removed"] == 4


def test_a_duplicate_share_above_the_limit_is_refused(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18: an 18% leak of copied rows used to pass with a warning."""
    frame = digits_frame(100)
    pd.concat([frame, frame.iloc[:22]]).to_csv(workdir / "leak.csv", index=False)
    assert run_prepare(workdir, "leak.csv") == 1
    err = capsys.readouterr().err
    assert (
        "leak.csv: 22 duplicate row(s) (18.0% of 122): line 102, line 103, line 104, line 105,"
        " line 106, ... repeat earlier rows; more than data.max_duplicate_share 5.0%"
    ) in err
    assert not (workdir / "prepared").exists()
    # a genuine repeat rate is a params decision, not a code change
    assert run_prepare(workdir, "leak.csv", data__max_duplicate_share=0.2) == 0
    assert read_json(workdir / "prepared" / "meta.json")["duplicates_removed"] == 22


@pytest.mark.parametrize("share", [-0.1, 1.0, "5%"])
def test_the_duplicate_limit_is_a_typed_fraction(workdir: Path, share: object) -> None:
    write_params(workdir, "digits", data__max_duplicate_share=share)
    with pytest.raises(ValueError, match="data.max_duplicate_share"):
        load_params(workdir / "params.yaml", workdir.parent.parent / "params.yaml")


def test_prepare_records_each_rows_source_line(workdir: Path) -> None:
    frame = digits_frame(100)
    frame.to_csv(workdir / "mine.csv", index=False)
    assert run_prepare(workdir, "mine.csv") == 0
    splits = load_splits(workdir / "prepared")
    lines = load_lines(workdir / "prepared", splits)
    assert lines is not None and lines.source == "mine.csv" and lines.unit == "line"
    X = frame.drop(columns=["label"]).to_numpy(np.float32)
    for name, split in splits.items():
        assert np.array_equal(split.X, X[lines.splits[name] - 2])


def test_identical_images_with_different_labels_are_an_error(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = digits_frame(100)
    relabelled = frame.iloc[:3].assign(label=lambda f: (f["label"] + 1) % 10)
    pd.concat([frame, relabelled]).to_csv(workdir / "conflict.csv", index=False)
    assert run_prepare(workdir, "conflict.csv") == 1
    err = capsys.readouterr().err
    assert "3 set(s) of identical features carry different labels (6 rows)" in err
    assert "line 2 (label" in err and "= line 102 (label" in err
    assert not (workdir / "prepared").exists()
