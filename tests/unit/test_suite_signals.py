"""The suite itself: started with SIGINT ignored (a background job of a shell without job
control), the tests that play a terminal's Ctrl-C still see what a terminal user sees, because
tests/conftest.py puts Python's handler back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HELD = (
    "tests/unit/test_registry_promises.py::test_ctrl_c_is_held_until_the_registry_section_completes"
)
# what `make test &` does to the run: SIGINT ignored before pytest starts (exec keeps it so)
IGNORED_THEN_PYTEST = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, '-m', 'pytest', *sys.argv[1:]])"
)


def test_a_run_started_with_sigint_ignored_still_interrupts() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IGNORED_THEN_PYTEST, "-q", "-p", "no:cacheprovider", HELD],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
