"""A throw-away git copy of this repository, for benchmarks and tests that must not touch it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIT_ID = ["-c", "user.email=bench@example.com", "-c", "user.name=bench"]


def copy_repo(target: Path, source: Path = REPO) -> Path:
    """Copy tracked and untracked-but-not-ignored files into `target` and commit them there."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        if (source / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=target, check=True)
    subprocess.run(["git", *GIT_ID, "add", "-A"], cwd=target, check=True)
    subprocess.run(["git", *GIT_ID, "commit", "-qm", "copy"], cwd=target, check=True)
    return target


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for `dvc`/stage subprocesses in a copy: this venv first on PATH (the stages
    call `python`), this checkout's packages first on PYTHONPATH, and no inherited
    MLFLOW_TRACKING_URI, so a copy never writes to a shared server.
    """
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # DVC runs `python -m ml.stages...` in a model's folder, where `ml` would resolve to whatever
    # checkout the venv was installed from (an editable install of another worktree): a copy of
    # this checkout must run this checkout's code
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def remove_outputs(workspace: Path, paths: tuple[str, ...]) -> None:
    for name in paths:
        path = workspace / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
