"""Every GitLab job that runs `make` runs the bootstrap, which needs Python >= 3.11: its image
must be one docs/CI.md documents with such a Python. Issue 19 #3: the CML images (Ubuntu 20.04,
Python 3.8) could not bootstrap."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from scripts.repo_copy import REPO

BOOTSTRAP_PYTHON = (3, 11)


def documented_pythons(doc: str) -> dict[str, tuple[int, ...] | None]:
    """{image: its Python (None: none)} from the image table of docs/CI.md."""
    found: dict[str, tuple[int, ...] | None] = {}
    for row in re.findall(r"^\| `([^`]+)` \| [^|]+ \| ([^|]+) \|", doc, flags=re.M):
        image, python = row[0], row[1].strip()
        found[image] = tuple(int(p) for p in python.split(".")) if python[0].isdigit() else None
    return found


def job_images(config: dict[str, object]) -> dict[str, str]:
    """{job: image} of the jobs that run `make`."""
    default = config["default"]["image"]  # type: ignore[index]
    images = {}
    for name, job in config.items():
        if name.startswith(".") or not isinstance(job, dict) or "script" not in job:
            continue
        if any(str(line).startswith("make ") for line in job["script"]):
            image = job.get("image", default)
            images[name] = image["name"] if isinstance(image, dict) else image
    return images


def unfit(config: dict[str, object], doc: str) -> list[str]:
    pythons = documented_pythons(doc)
    problems = []
    for job, image in job_images(config).items():
        # the table documents "image[-gpu]" variants as one row
        row = next(
            (
                k
                for k in pythons
                if re.sub(r"\[(-\w+)\]$", "", k) == re.sub(r"-gpu$", "", image) or k == image
            ),
            None,
        )
        if row is None:
            problems.append(f"{job}: image {image} is not documented in docs/CI.md")
        elif (pythons[row] or (0,)) < BOOTSTRAP_PYTHON:
            problems.append(
                f"{job}: image {image} has Python {pythons[row]}, the bootstrap needs 3.11"
            )
    return problems


def test_every_make_job_can_run_the_bootstrap() -> None:
    config = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    doc = (REPO / "docs" / "CI.md").read_text()
    assert {"train", "report", "launch-runner", "release"} <= set(job_images(config))
    assert unfit(config, doc) == []


@pytest.mark.parametrize(
    "image", ["iterativeai/cml:0-dvc3-base1-gpu", "iterativeai/cml:0-dvc3-base1", "ubuntu:20.04"]
)
def test_the_check_refuses_an_image_that_cannot(image: str) -> None:
    """What the pipeline had (the CML images) and an undocumented image are both caught."""
    config = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    config["train"]["image"] = image
    problems = unfit(config, (REPO / "docs" / "CI.md").read_text())
    assert len(problems) == 1 and problems[0].startswith("train: image")


def test_the_bootstrap_refuses_an_old_python(tmp_path: Path) -> None:
    """The bootstrap itself says what is wrong instead of failing later in pip."""
    import subprocess

    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\n[ "$1" = -c ] && { echo 3.8; exit 0; }\nexit 1\n')
    fake.chmod(0o755)
    result = subprocess.run(
        ["bash", str(REPO / "scripts/bootstrap.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake)},
    )
    assert result.returncode == 2 and "needs Python >= 3.11, found 3.8" in result.stderr


def test_make_cml_installs_the_pinned_cli_with_npm(tmp_path: Path) -> None:
    """CML is not in our images: `make cml` installs it from npm (a recording stand-in here: the
    npm registry has no CML package reachable from these machines)."""
    import os
    import subprocess

    log = tmp_path / "npm.log"
    npm = tmp_path / "npm"
    npm.write_text(f'#!/bin/sh\necho "npm stand-in (tests/ci): $*" >>{log}\n')
    npm.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "cml", "CML=cml-not-installed"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "install -g --no-audit --no-fund @dvcorg/cml@0.20" in log.read_text()
    present = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "cml", "CML=true"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert present.returncode == 0 and log.read_text().count("install") == 1
