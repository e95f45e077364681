"""Issue 18 against a real `dvc repro` of the small model (breast-cancer) in its own scratch
copy: the one case where DVC removes outputs before a stage refuses bad params (`dvc repro -s`)
is recovered byte for byte as docs/PIPELINE.md says."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.repo_copy import _GIT_ID, copy_repo, tool_env
from tests.conftest import run

pytestmark = pytest.mark.e2e

MODEL = "models/breast-cancer"
PIPELINE = f"{MODEL}/dvc.yaml"
PARAMS = f"{MODEL}/params.yaml"


def _commit(workspace: Path, message: str) -> None:
    """The copy's state after a completed run becomes its baseline (what `git checkout` restores)."""
    run(["git", *_GIT_ID, "add", "-A"], workspace)
    run(["git", *_GIT_ID, "commit", "-qm", message, "--allow-empty"], workspace)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A git copy of the repository with breast-cancer trained and registered (its own DVC cache
    and MLflow store, like a fresh clone's); digits is never run here."""
    copy = copy_repo(tmp_path_factory.mktemp("interrupt"))
    run(["dvc", "repro", PIPELINE], copy)
    _commit(copy, "trained")
    yield copy


def _fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_refused_single_stage_run_is_recovered_byte_for_byte(workspace: Path) -> None:
    """`dvc repro -s train` skips the check stage and DVC removes train's outputs before train
    refuses `epochs: 0`: the documented recovery brings every file back, identical."""
    folder = workspace / MODEL
    before = _fingerprint(folder)
    params = workspace / PARAMS
    params.write_text(params.read_text().replace("epochs: 200", "epochs: 0", 1))
    result = run(["dvc", "repro", "-s", f"{PIPELINE}:train"], workspace, check=False)
    assert result.returncode != 0
    assert "params.yaml:" in result.stderr and "train.epochs" in result.stderr, result.stderr
    assert "dvc checkout" in result.stderr  # the hint to the recovery
    # the recovery of docs/PIPELINE.md, after fixing the params
    run(["git", "checkout", "--", PARAMS], workspace)
    deleted = run(["git", "ls-files", "--deleted", MODEL], workspace).stdout.split()
    if deleted:
        run(["git", "checkout", "--", *deleted], workspace)
    run(["dvc", "checkout", PIPELINE], workspace)
    assert _fingerprint(folder) == before
    assert "up to date" in run(["dvc", "status", PIPELINE], workspace).stdout
