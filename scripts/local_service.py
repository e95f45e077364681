"""The real model service as a child process on a free loopback port: one home for starting it.

Used wherever a tool needs a live `python -m ml.serving` (live /metrics for the manifests check,
the performance gate) and for free loopback ports (rehearsal, benchmarks).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_service(
    model: Path, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> Iterator[str]:
    """Start ml.serving on `model`, wait on its readiness endpoint (no fixed sleep), yield the
    base URL, and always stop the process, killing it if it does not drain in 10 s."""
    port = free_port()
    child_env = {**os.environ, "MODEL_URI": str(model), "PORT": str(port), "HOST": "127.0.0.1"}
    child_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml.serving"],
        cwd=REPO,
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"ml.serving exited with {proc.returncode}: {err[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ml.serving not ready on {base} after {timeout:.0f} s")
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
