"""Review rules the repository states as files: CODEOWNERS covers production, and pre-commit
runs exactly what `make lint` runs."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def owned(path: str, patterns: list[str]) -> bool:
    # GitLab's patterns here are anchored folder patterns: /a/*/b/ owns everything under a/x/b/.
    return any(fnmatch.fnmatch(f"/{path}/", pattern + "*") for pattern in patterns)


def codeowners_patterns() -> list[str]:
    lines = (ROOT / "CODEOWNERS").read_text().splitlines()
    return [line.split()[0] for line in lines if line.startswith("/")]


def test_every_production_path_has_code_owners() -> None:
    patterns = codeowners_patterns()
    production = [p.relative_to(ROOT).as_posix() for p in ROOT.glob("apps/*/overlays/production")]
    production += ["clusters/production", "clusters/_platform"]
    assert production and [p for p in production if not owned(p, patterns)] == []
    assert not owned("apps/digits-classifier/overlays/staging", patterns)


def test_pre_commit_runs_what_make_lint_runs() -> None:
    makefile = (ROOT / "Makefile").read_text().split("\nlint:", 1)[1]
    recipe = []
    for line in makefile.splitlines()[1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().replace("$(BIN)", ".venv/bin"))
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
    assert entries == recipe
