"""A clone must explain itself: no file may cite a source outside the repository.

Specs the code follows live in docs/ in our own words (docs/ROLLOUTS.md, docs/TOOLS.md); a
citation of a planning file next to the repository, or of a path that climbs out of it, would
send a newcomer to something a clone does not have.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Spelled in pieces so this file does not match itself.
FORBIDDEN_WORDS = ("MISS" + "ION", "REFER" + "ENCE.md")
_WORD = re.compile(r"\b(" + "|".join(re.escape(w) for w in FORBIDDEN_WORDS) + r")\b")
_CLIMB = re.compile(r"(?<![\w./-])((?:\.\./)+)([\w.-]+)")
_DOC = re.compile(r"(?<![\w/.-])docs/([A-Z][A-Z_]*\.md)")


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    files = []
    for name in filter(None, out.split("\0")):
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue  # binary
        files.append(path)
    return files


def _folders() -> list[Path]:
    return sorted({p.parent for p in _tracked_text_files()} | {ROOT})


def _inside(path: Path) -> bool:
    resolved = path.resolve()
    return resolved == ROOT or ROOT in resolved.parents


def outside_citations(text: str, folders: list[Path], here: Path = ROOT) -> list[str]:
    """Every citation in `text`, of a file in folder `here`, of something outside the repository.

    A relative path that climbs (`../`) is inside when it stays in the repository from `here`, or
    lands on an existing path from one of `folders`: READMEs show snippets written for another
    folder (`../../_shared` as an overlay says it).
    """
    found = [f"cites {m.group(1)}" for m in _WORD.finditer(text)]
    for match in _CLIMB.finditer(text):
        climb, name = match.groups()
        if _inside(here / climb / name):
            continue
        if not any(
            (folder / climb / name).exists() and _inside(folder / climb / name)
            for folder in folders
        ):
            found.append(f"a path found from no folder of the repository: {match.group(0)}")
    return found


def test_no_file_cites_a_source_outside_the_repository() -> None:
    problems = []
    folders = _folders()
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        problems += [
            f"{path.relative_to(ROOT)}: {p}" for p in outside_citations(text, folders, path.parent)
        ]
    assert problems == []


def test_every_cited_doc_exists() -> None:
    missing = set()
    for path in _tracked_text_files():
        for name in _DOC.findall(path.read_text(encoding="utf-8", errors="replace")):
            if not (ROOT / "docs" / name).is_file():
                missing.add(f"{path.relative_to(ROOT)}: docs/{name}")
    assert sorted(missing) == []


def test_the_check_catches_what_it_names() -> None:
    # The rule itself, on the citations this repository used to carry.
    folders = _folders()
    rehearsal = ROOT / "scripts" / "rehearsal"
    assert outside_citations("semantics (" + "../" * 3 + "shared/spec.md)", folders, rehearsal)
    assert outside_citations("min: 0.9  # (" + FORBIDDEN_WORDS[0] + ": 0.1)", folders)
    assert outside_citations("see " + FORBIDDEN_WORDS[1], folders)
    # Kustomize's climbs that land in the repository are fine.
    assert outside_citations("- ../../_shared/model-service", folders) == []
