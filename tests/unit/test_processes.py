"""scripts.processes, the one home for child processes: what its users rely on."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from scripts.processes import ManagedProcess, ProcessError, start_ticks, wait_until

# A server that spawns a worker of its own and prints the worker's pid, like gunicorn does.
PARENT_WITH_WORKER = (
    "import subprocess, sys, time\n"
    "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(w.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def _worker_pid(process: ManagedProcess) -> int:
    wait_until(lambda: process.log_path.read_text().strip() != "", 10, "the worker", process)
    return int(process.log_path.read_text().split()[0])


def test_group_stop_takes_the_workers_along(tmp_path: Path) -> None:
    process = ManagedProcess("server", [sys.executable, "-c", PARENT_WITH_WORKER], tmp_path / "log")
    process.start()
    worker = _worker_pid(process)
    process.stop(grace_seconds=5, group=True)
    wait_until(lambda: _gone(worker), 5, "the worker to go")
    assert not process.alive()


def test_plain_stop_leaves_a_worker_to_its_own_fate(tmp_path: Path) -> None:
    # The contrast that shows group=True is what stops workers.
    process = ManagedProcess("server", [sys.executable, "-c", PARENT_WITH_WORKER], tmp_path / "log")
    process.start()
    worker = _worker_pid(process)
    try:
        process.stop(grace_seconds=5)
        assert not _gone(worker)
    finally:
        os.kill(worker, 9)


def test_wait_until_fails_fast_with_the_log_of_a_dead_child(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"]
    process = ManagedProcess("svc", argv, tmp_path / "log")
    process.start()
    with pytest.raises(ProcessError, match=r"svc exited \(code 3\) before ready:\nbad config"):
        wait_until(lambda: False, 30, "ready", process)


def _gone(pid: int) -> bool:
    ticks = start_ticks(pid)
    if ticks is None:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
