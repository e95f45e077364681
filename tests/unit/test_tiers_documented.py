"""tests/README.md has a row for every test folder."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_folder_has_a_row() -> None:
    rows = set(re.findall(r"^\| `([a-z0-9_]+)/` \|", (TESTS / "README.md").read_text(), re.M))
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert rows == folders
