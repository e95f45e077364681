"""Issue 18 against a real, running `dvc repro` of the small model (breast-cancer) in its own
scratch copy: Ctrl-C (SIGINT to the process group, as a terminal sends it) while train runs and
while register runs, then `dvc repro` again completes with exactly one registry version for the
model's content; and the one case where DVC removes outputs before a stage refuses bad params
(`dvc repro -s`) is recovered byte for byte as docs/PIPELINE.md says."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from scripts.repo_copy import GIT_ID, copy_repo, tool_env
from tests.conftest import run

pytestmark = pytest.mark.e2e

MODEL = "models/breast-cancer"
PIPELINE = f"{MODEL}/dvc.yaml"
PARAMS = f"{MODEL}/params.yaml"


def _commit(workspace: Path, message: str) -> None:
    """The state after a completed run becomes the baseline (what `git checkout` restores)."""
    run(["git", *GIT_ID, "add", "-A"], workspace)
    run(["git", *GIT_ID, "commit", "-qm", message, "--allow-empty"], workspace)


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


def _versions_of_content(workspace: Path) -> list[str]:
    """Registry versions of breast-cancer whose ONNX is the workspace's model.onnx."""
    sha = hashlib.sha256((workspace / MODEL / "model.onnx").read_bytes()).hexdigest()
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    return sorted(
        v.version
        for v in client.search_model_versions("name = 'breast-cancer'")
        if v.tags.get("onnx_sha256") == sha
    )


def _group_runs(pgid: int, needle: str) -> bool:
    """Whether a process of group `pgid` has `needle` in its command line."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        # field 5 of /proc/<pid>/stat is the process group; the name (field 2) may hold spaces
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid and needle in cmdline:
            return True
    return False


def _ctrl_c_during(workspace: Path, stage: str, marker: str) -> str:
    """Start `dvc repro` in its own process group, wait until `stage` runs and its output shows
    `marker`, send SIGINT to the whole group as a terminal's Ctrl-C does; return the output."""
    log = workspace.parent / f"repro-{stage}.log"
    with open(log, "w") as out:
        repro = subprocess.Popen(
            ["dvc", "repro", PIPELINE],
            cwd=workspace,
            env=tool_env(PYTHONUNBUFFERED="1"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while not (_group_runs(repro.pid, f"ml.stages.{stage}") and marker in log.read_text()):
                assert (
                    repro.poll() is None
                ), f"dvc repro ended before {stage} ran:\n{log.read_text()}"
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            os.killpg(repro.pid, signal.SIGINT)
            returncode = repro.wait(timeout=120)
        finally:
            if repro.poll() is None:
                os.killpg(repro.pid, signal.SIGKILL)
                repro.wait()
    output = log.read_text()
    assert returncode != 0, output
    assert f"{stage}: interrupted" in output, output
    return output


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


def test_ctrl_c_while_train_runs_then_repro_completes(workspace: Path) -> None:
    params = workspace / PARAMS
    params.write_text(params.read_text().replace("weight_decay: 0.1", "weight_decay: 0.09", 1))
    output = _ctrl_c_during(workspace, "train", "train: fitting on")
    assert "dvc.yaml:register'" not in output
    run(["dvc", "repro", PIPELINE], workspace)
    assert "up to date" in run(["dvc", "status", PIPELINE], workspace).stdout
    assert len(_versions_of_content(workspace)) == 1
    _commit(workspace, "weight decay 0.09")


def test_ctrl_c_while_register_runs_then_repro_completes(workspace: Path) -> None:
    """The gate table is printed just before the registry section (held against SIGINT): the
    signal lands in or just before it, the worst moment for a duplicate version."""
    params = workspace / PARAMS
    params.write_text(params.read_text().replace("min_accuracy: 0.95", "min_accuracy: 0.951", 1))
    _ctrl_c_during(workspace, "register", "max_p99_latency_ms")
    run(["dvc", "repro", PIPELINE], workspace)
    assert "up to date" in run(["dvc", "status", PIPELINE], workspace).stdout
    assert len(_versions_of_content(workspace)) == 1
    _commit(workspace, "min accuracy 0.951")
