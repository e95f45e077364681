"""Child processes of the local tools: one home for starting, waiting on and stopping them.

Two lifetimes: a `ManagedProcess` lives as long as the tool that started it (rehearsal, bench,
`running_service` for a live model service);
a detached one outlives it (`make cluster-up` returns while the control plane runs) and is
stopped later from its `DaemonRecord`. Every process gets its own session, so a Ctrl-C in the
terminal reaches the tool, which then stops its children in order, and is stopped by pid and
start time, never by name: a pid reused by an unrelated process is left alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ProcessError(RuntimeError):
    """A child process could not start, died early, or a condition was not met in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now on `host` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/<pid>/stat); None if gone.

    Together with the pid this names one process for good: a recycled pid has another start."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


@dataclass(frozen=True)
class DaemonRecord:
    """A detached process, as written to a state file: enough to find and stop it later."""

    name: str
    pid: int
    ticks: int
    log: str

    def alive(self) -> bool:
        return start_ticks(self.pid) == self.ticks and not _is_zombie(self.pid)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DaemonRecord":
        return cls(str(data["name"]), int(data["pid"]), int(data["ticks"]), str(data["log"]))


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].startswith("Z")


def stop_daemon(record: DaemonRecord, grace_seconds: float = 10.0) -> bool:
    """SIGTERM the record's process group, SIGKILL what is left after `grace_seconds`.

    Returns False when the process was already gone (or its pid now names another process)."""
    if not record.alive():
        return False
    try:
        os.killpg(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not record.alive():
            return True
        time.sleep(0.05)
    try:
        os.killpg(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


class ManagedProcess:
    """One child process with its log file; stopped by pid, never by name."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        own_session: bool = True,
    ) -> None:
        """`own_session=False` keeps the child in our process group, for a helper that must
        die with us (a daemon's own child, stopped when the daemon's group is signalled)."""
        self.name = name
        self.own_session = own_session
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    cwd=self.cwd,
                    # the terminal's Ctrl-C goes to us, not to them
                    start_new_session=self.own_session,
                )
        except OSError as exc:
            raise ProcessError(f"{self.name}: cannot start {self.argv[0]}: {exc}") from None

    def record(self) -> DaemonRecord:
        """What a later process needs to stop this one (it keeps running when we exit)."""
        if self.process is None:
            raise ProcessError(f"{self.name} was never started")
        ticks = start_ticks(self.process.pid)
        if ticks is None:
            raise ProcessError(f"{self.name} exited at once:\n{self.log_tail()}")
        return DaemonRecord(self.name, self.process.pid, ticks, str(self.log_path))

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        """The running child, for callers that signal or wait on it themselves."""
        if self.process is None:
            raise ProcessError(f"{self.name} was never started")
        return self.process

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_seconds: float = 5.0, group: bool = False) -> int | None:
        """SIGTERM, wait up to `grace_seconds`, then SIGKILL; returns the exit code.

        `group=True` signals the child's whole session (it must have its own), for servers that
        spawn workers of their own: the workers go with it."""
        process = self.process
        if process is None:
            return None
        if group and not self.own_session:
            raise ProcessError(f"{self.name}: group stop needs its own session")
        if process.poll() is None:
            self._signal(process, signal.SIGTERM, group)
            try:
                process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                self._signal(process, signal.SIGKILL, group)
                process.wait(timeout=grace_seconds)
        return process.returncode

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], sig: int, group: bool) -> None:
        try:
            if group:
                os.killpg(process.pid, sig)  # own session: the group id is the child's pid
            else:
                process.send_signal(sig)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    process: ManagedProcess | None = None,
    poll: float = 0.05,
    explain: Callable[[], object] | None = None,
) -> T:
    """Poll `condition` until it returns a truthy value, and return that value; fail fast if
    `process` dies, with its log tail. On timeout the error says what was awaited, and what
    `explain()` saw then (the engines' view of a cluster, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and not process.alive():
            code = process.process.returncode if process.process else None
            raise ProcessError(
                f"{process.name} exited (code {code}) before {what}:\n{process.log_tail()}"
            )
        if time.monotonic() > deadline:
            tail = f":\n{process.log_tail()}" if process is not None else ""
            seen = f"; seen: {explain()}" if explain is not None else ""
            raise ProcessError(f"timed out after {timeout:g} s waiting for {what}{seen}{tail}")
        time.sleep(poll)


REPO = Path(__file__).resolve().parents[1]


def _ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    return check


@contextmanager
def running_service(
    model: Path, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> Iterator[str]:
    """The real model service (`python -m ml.serving`) on `model` at a free loopback port: wait on
    its readiness endpoint (no fixed sleep), yield the base URL, and always stop it, killing it if
    it does not drain in 10 s. Used for live /metrics (make manifests) and the performance gate."""
    port = free_port()
    child_env = {**os.environ, "MODEL_URI": str(model), "PORT": str(port), "HOST": "127.0.0.1"}
    child_env.update(env or {})
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"ml-serving-{os.getpid()}-{port}.log"
    service = ManagedProcess(
        "ml.serving", [sys.executable, "-m", "ml.serving"], log, child_env, REPO
    )
    base = f"http://127.0.0.1:{port}"
    service.start()
    try:
        wait_until(
            _ready(f"{base}/v2/health/ready"), timeout, f"ml.serving ready on {base}", service
        )
        yield base
    finally:
        service.stop(grace_seconds=10.0)
        log.unlink(missing_ok=True)
