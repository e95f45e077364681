"""The local cluster for the tests that need the real engines: up once per session.

A cluster already up in CLUSTER_DIR (`make cluster-up`) is reused and left running; otherwise
the session starts one and stops it at the end."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.cluster.control_plane import Layout, State

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Layout]:
    layout = Layout.default()
    state = State.read(layout)
    started_here = state is None or not state.running()
    if started_here:
        result = subprocess.run(
            [sys.executable, "-m", "scripts.cluster", "up"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield layout
    finally:
        if started_here:
            subprocess.run([sys.executable, "-m", "scripts.cluster", "down"], cwd=REPO)
