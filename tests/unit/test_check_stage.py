"""The params check every pipeline runs first (issue 18): refusals name file, line and key, and
happen before any other stage could have removed an output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ml.stages import check
from tests.conftest import REPO
from tests.unit.conftest import COMMON, catalog_args

ARGS = [*COMMON, "--pipeline", "dvc.yaml", "--stamp", "reports/params_check.json"]


@pytest.fixture
def folder(workdir: Path) -> Path:
    shutil.copy(REPO / "models/digits/dvc.yaml", workdir / "dvc.yaml")
    return workdir


def _set(folder: Path, old: str, new: str) -> int:
    """Edit the params text; returns the line of the edit's last line."""
    text = (folder / "params.yaml").read_text()
    assert old in text, old
    edited = text.replace(old, new, 1)
    (folder / "params.yaml").write_text(edited)
    last = new.strip().splitlines()[-1]
    return next(n for n, line in enumerate(edited.splitlines(), 1) if last in line)


def test_valid_params_write_the_same_stamp_every_time(folder: Path) -> None:
    assert check.main([*ARGS, *catalog_args()]) == 0
    stamp = (folder / "reports/params_check.json").read_bytes()
    _set(folder, "epochs: 8", "epochs: 9")
    assert check.main([*ARGS, *catalog_args()]) == 0
    assert (folder / "reports/params_check.json").read_bytes() == stamp  # nothing after reruns
    assert json.loads(stamp)["passed"]


def test_a_refusal_names_the_line_and_leaves_the_stamp(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check.main([*ARGS, *catalog_args()]) == 0
    before = (folder / "reports/params_check.json").read_bytes()
    line = _set(folder, "  test_size: 0.2\n", "  test_size: 0.2\n  test_szie: 0.3\n")
    assert check.main([*ARGS, *catalog_args()]) == 1
    err = capsys.readouterr().err
    assert f"params.yaml:{line}: data.test_szie: unknown key" in err
    assert (folder / "reports/params_check.json").read_bytes() == before


def test_a_source_outside_the_repository_is_refused(
    folder: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "digits.npz"
    np.savez(outside, X=np.zeros((20, 64)), y=np.arange(20) % 10)
    line = _set(folder, "source: sklearn:digits", f"source: {outside}")
    assert check.main([*ARGS, *catalog_args()]) == 1
    err = capsys.readouterr().err
    assert f"params.yaml:{line}: data.source" in err and "outside the repository" in err


def test_a_source_prepare_does_not_depend_on_is_refused(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Edits to an untracked source would leave a stale model: the file must be a prepare dep."""
    np.savez(folder / "digits.npz", X=np.zeros((20, 64)), y=np.arange(20) % 10)
    _set(folder, "source: sklearn:digits", "source: digits.npz")
    assert check.main([*ARGS, *catalog_args()]) == 1
    assert "not a dependency of the prepare stage" in capsys.readouterr().err
    text = (folder / "dvc.yaml").read_text()
    (folder / "dvc.yaml").write_text(
        text.replace("      - ../../ml/data.py\n", "      - ../../ml/data.py\n      - digits.npz\n")
    )
    assert check.main([*ARGS, *catalog_args()]) == 0


def test_a_missing_source_and_an_unknown_bundle_are_refused(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _set(folder, "source: sklearn:digits", "source: sklearn:digitz")
    assert check.main([*ARGS, *catalog_args()]) == 1
    assert "scikit-learn bundles no data set 'digitz'" in capsys.readouterr().err
    _set(folder, "source: sklearn:digitz", "source: nowhere.csv")
    assert check.main([*ARGS, *catalog_args()]) == 1
    assert "nowhere.csv: no such file" in capsys.readouterr().err


def test_cuda_without_cuda_is_one_line_not_a_traceback(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # whatever this machine has
    line = _set(folder, "device: auto", "device: cuda")
    assert check.main([*ARGS, *catalog_args()]) == 1
    err = capsys.readouterr().err
    assert f"params.yaml:{line}: train.device: cuda but this machine has 0 CUDA device(s)" in err
    assert "Traceback" not in err


def test_train_itself_refuses_cuda_without_a_traceback(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dvc repro -s train` skips the check: train's own refusal is one line too."""
    import torch

    from ml.stages import prepare, train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _set(workdir, "device: auto", "device: cuda")
    assert prepare.main([*COMMON, "--out", "data/prepared"]) == 0
    args = [*COMMON, "--data", "data/prepared", "--model", "model.pt"]
    args += ["--history", "h.csv", *catalog_args()]
    assert train.main(args) == 1
    err = capsys.readouterr().err
    assert "train.device=cuda but CUDA is not available" in err and "Traceback" not in err
