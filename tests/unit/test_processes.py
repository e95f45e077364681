"""Child processes: started in their own session, stopped by pid and start time, never by name."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from scripts.processes import (
    DaemonRecord,
    ManagedProcess,
    ProcessError,
    free_port,
    start_ticks,
    stop_daemon,
    wait_until,
)

# a child that ignores nothing and sleeps; one that ignores SIGTERM (needs SIGKILL)
SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('up', flush=True); time.sleep(60)",
]


def test_a_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_start_ticks_names_a_living_process_only() -> None:
    assert start_ticks(os.getpid()) is not None
    assert start_ticks(2**22 + 12345) is None  # above pid_max: never a process


def test_a_managed_process_logs_runs_in_its_own_session_and_stops(tmp_path: Path) -> None:
    child = ManagedProcess("sleeper", SLEEPER, tmp_path / "logs" / "sleeper.log")
    child.start()
    try:
        wait_until(lambda: "up" in child.log_tail(), 10, "the child's first line", child)
        assert child.alive() and child.pid is not None
        assert os.getsid(child.pid) == child.pid != os.getsid(0)
    finally:
        code = child.stop(grace_seconds=5)
    assert code == -15 and not child.alive()
    assert child.stop() == -15  # stopping twice is harmless


def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    child = ManagedProcess("stubborn", STUBBORN, tmp_path / "stubborn.log")
    child.start()
    wait_until(lambda: "up" in child.log_tail(), 10, "the child's first line", child)
    started = time.monotonic()
    assert child.stop(grace_seconds=0.5) == -9
    assert time.monotonic() - started < 5


def test_a_program_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    child = ManagedProcess("ghost", ["/nonexistent/program"], tmp_path / "ghost.log")
    with pytest.raises(ProcessError, match="ghost: cannot start /nonexistent/program"):
        child.start()
    with pytest.raises(ProcessError, match="never started"):
        child.record()
    assert child.stop() is None and child.log_tail() == ""


def test_waiting_on_a_child_that_dies_shows_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('bad flag --x'); sys.exit(3)"]
    child = ManagedProcess("quitter", argv, tmp_path / "quitter.log")
    child.start()
    with pytest.raises(ProcessError, match=r"quitter exited \(code 3\) before ready:\nbad flag"):
        wait_until(lambda: False, 10, "ready", child)


def test_waiting_times_out_with_what_was_awaited() -> None:
    with pytest.raises(ProcessError, match="timed out after 0.2 s waiting for the moon"):
        wait_until(lambda: False, 0.2, "the moon")


def test_waiting_returns_the_awaited_value_and_explains_a_timeout() -> None:
    answers = iter([None, 0, {"phase": "Succeeded"}])
    assert wait_until(lambda: next(answers), 5, "a phase", poll=0.01) == {"phase": "Succeeded"}
    with pytest.raises(ProcessError, match=r"waiting for a sync; seen: phase Running$"):
        wait_until(lambda: None, 0.05, "a sync", poll=0.01, explain=lambda: "phase Running")


def test_a_daemon_record_stops_its_process_group_and_survives_json(tmp_path: Path) -> None:
    child = ManagedProcess("daemon", STUBBORN, tmp_path / "daemon.log")
    child.start()
    wait_until(lambda: "up" in child.log_tail(), 10, "the child's first line", child)
    record = DaemonRecord.from_json(child.record().to_json())
    assert record.alive() and record.name == "daemon" and record.pid == child.pid
    assert stop_daemon(record, grace_seconds=0.5)  # SIGTERM ignored: SIGKILL after the grace
    assert child.process is not None and child.process.wait(timeout=5) == -9
    assert not record.alive()
    assert not stop_daemon(record)  # already gone


def test_a_recycled_pid_is_left_alone() -> None:
    # our own pid with another start time: what a record looks like once its pid is reused
    ticks = start_ticks(os.getpid())
    assert ticks is not None
    stranger = DaemonRecord("old", os.getpid(), ticks + 1, "/dev/null")
    assert not stranger.alive()
    assert not stop_daemon(stranger)  # we are still here to assert it


def test_a_child_that_exits_at_once_has_no_record(tmp_path: Path) -> None:
    child = ManagedProcess("brief", [sys.executable, "-c", "print('bye')"], tmp_path / "b.log")
    child.start()
    assert child.process is not None
    child.process.wait(timeout=10)
    with pytest.raises(ProcessError, match="brief exited at once:\nbye"):
        child.record()


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


def _gone(pid: int) -> bool:
    ticks = start_ticks(pid)
    if ticks is None:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
