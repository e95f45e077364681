"""Fixtures of the rehearsal tests (the fakes live in rehearsal_fakes.py)."""

from __future__ import annotations

import pytest

from scripts.rehearsal.analysis import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at an arbitrary non-zero start, so code cannot assume time starts at 0."""
    return FakeClock(1000.0)
