"""docs/ARCHITECTURE.md names every top-level folder of the repository, and only those."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_ROW = re.compile(r"^\| `([^`/]+)/` \|", re.MULTILINE)


def top_level_folders() -> set[str]:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    return {name.split("/", 1)[0] for name in files if "/" in name}


def mapped_folders(text: str) -> set[str]:
    return set(_ROW.findall(text))


def test_the_map_lists_every_top_level_folder() -> None:
    mapped = mapped_folders((ROOT / "docs" / "ARCHITECTURE.md").read_text())
    assert mapped == top_level_folders()


def test_a_folder_row_is_what_the_map_reads() -> None:
    table = "| `ml/` | runs in containers | x |\n| `tools/` | pinned | y |\n| not/a/row |"
    assert mapped_folders(table) == {"ml", "tools"}
