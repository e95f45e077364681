"""Shared fixtures. `pipeline_workspace` runs the real `dvc repro` of every model once per test
session in a temporary git copy of the repo (no DVC cache, no MLflow store: a fresh clone); every
tier that needs trained, exported, registered models (model behaviour, serving, rehearsal, the
fresh-clone checks) reuses it instead of training again."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml.catalog import load_catalog
from scripts.repo_copy import copy_repo, tool_env

REPO = Path(__file__).resolve().parents[1]

# A shell without job control starts a background job (`make test &`, `nohup`) with SIGINT
# ignored, and every child inherits that: the tests that play a terminal's Ctrl-C (on dvc repro,
# the rehearsal, register's held section) would then interrupt nothing and fail. The suite puts
# Python's own handler back, so they see what a user at a terminal sees; children get the
# default disposition at exec. The cost: Ctrl-C in that shell's terminal now reaches the run.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The fewest epochs after which the digits model clears the 0.95 accuracy gate with a margin
# (measured at seed 42: 5 epochs 0.942, 7-8 epochs 0.961), so fast chains still register.
FAST_EPOCHS = 8
VENV_BIN = Path(sys.executable).parent


def run(
    cmd: list[str], cwd: Path, check: bool = True, **extra: str
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=tool_env(**extra), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def pipeline_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temp copy of the repo after a real, from-scratch `dvc repro` of every model (no shared
    cache), as a fresh clone would run it."""
    workspace = copy_repo(tmp_path_factory.mktemp("pipeline"))
    for entry in load_catalog(workspace / "models.yaml").entries:
        for generated in ("data/prepared", "model.pt", "model.onnx", "reports/figures"):
            path = workspace / entry.folder / generated
            (
                shutil.rmtree(path, ignore_errors=True)
                if path.is_dir()
                else path.unlink(missing_ok=True)
            )
    # what `make run` does first, with this checkout's venv (no bootstrap in the copy)
    # (READY= : the copy's files are newer than the venv's bootstrap stamp, which would make
    # make bootstrap a second venv inside the copy)
    run(
        ["make", "--no-print-directory", "pipeline", f"VENV={VENV_BIN.parent}", "READY="], workspace
    )
    yield workspace
