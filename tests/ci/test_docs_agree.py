"""README, Makefile, .ci/run and the CI files agree: every command a newcomer reads is real."""

from __future__ import annotations

import re

import yaml

from scripts.repo_copy import REPO

README = (REPO / "README.md").read_text()
MAKEFILE = (REPO / "Makefile").read_text()
TARGETS = set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, re.M))
DOCUMENTED = set(re.findall(r"^([a-z][a-z-]*):.*## ", MAKEFILE, re.M))


def test_readme_make_commands_exist() -> None:
    used = set(re.findall(r"(?:`|^)make ([a-z][a-z-]*)", README, re.M))
    assert {"run", "test"} <= used
    assert used <= TARGETS, used - TARGETS


def test_every_public_target_is_documented_in_make_help() -> None:
    phony = set(
        " ".join(re.findall(r"^\.PHONY:(.*(?:\\\n.*)*)", MAKEFILE, re.M)).replace("\\", " ").split()
    )
    assert phony <= DOCUMENTED, phony - DOCUMENTED


def test_ci_runs_the_readme_test_command() -> None:
    ci_run = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci_run, re.M)
    assert "```bash\nmake run" in README and "\nmake test " in README


def test_readme_ci_table_matches_gitlab_jobs() -> None:
    config = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    jobs = {
        name: job["script"][0]
        for name, job in config.items()
        if isinstance(job, dict) and "script" in job and not name.startswith(".")
    }
    table = dict(re.findall(r"^\| `([a-z-]+)` \| [a-z]+ \| `([^`]+)` \|", README, re.M))
    assert table == jobs


def test_readme_tree_names_real_paths() -> None:
    block = README.split("## What is where", 1)[1].split("```", 2)[1]
    for line in block.strip().splitlines():
        for name in line.split("  ")[0].split():
            path = name.split("{")[0].rstrip("/")
            assert (REPO / path).exists(), f"README tree names {name!r}, which does not exist"


def test_release_dry_run_variable_reaches_the_tool() -> None:
    """README promises `make release TAG=<app>/vX.Y.Z DRY_RUN=1` only prints the diff."""
    import subprocess

    assert "make release TAG=digits-classifier/v1.2.3 DRY_RUN=1" in README.replace("\n  ", " ")
    shown = subprocess.run(
        ["make", "-n", "release", "TAG=digits-classifier/v1.2.3", "DRY_RUN=1", "CI="],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-m scripts.release digits-classifier/v1.2.3 --dry-run" in shown
    assert "--push" not in shown


def test_model_targets_take_model_and_loop_over_the_list() -> None:
    """README: targets that work on models take MODEL=<name> and otherwise loop over all."""
    import subprocess

    def dry(*args: str) -> str:
        return subprocess.run(
            ["make", "-n", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout

    assert 'scripts.models pipelines ""' in dry("pipeline")
    assert 'scripts.models pipelines "breast-cancer"' in dry("pipeline", "MODEL=breast-cancer")
    for target in ("rehearse", "seed-sweep", "drift"):
        assert "scripts.models names" in dry(target), target
    for target in ("run", "pipeline", "rehearse", "report", "seed-sweep", "drift", "serve"):
        assert re.search(rf"^{target}:.*## .*(model|MODEL)", MAKEFILE, re.M), target
