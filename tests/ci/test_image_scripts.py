"""scripts/sh/build_image.sh and scan_image.sh under GitLab's and Jenkins' variables, with
stand-ins for kaniko's executor and trivy (neither can run here: no container engine, no
registry) that record the arguments and environment they get and say what they are."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from scripts.repo_copy import REPO

PLAN = (
    "serving models/digits reg.test/mlops/digits-classifier\n"
    "trainer models/digits reg.test/mlops/digits-trainer\n"
)
SHA = "0123456789abcdef0123456789abcdef01234567"
GITLAB = {
    "CI_COMMIT_SHA": SHA,
    "CI_REGISTRY": "reg.test",
    "CI_REGISTRY_USER": "gitlab-ci-token",
    "CI_REGISTRY_PASSWORD": "job-token",
}
# what a Jenkins build has: the Git plugin's GIT_COMMIT/TAG_NAME, the Jenkinsfile's CI_REGISTRY
# and the 'registry' username/password credential bound as REGISTRY (REGISTRY_USR/_PSW)
JENKINS = {
    "GIT_COMMIT": SHA,
    "CI_REGISTRY": "reg.test",
    "REGISTRY_USR": "jenkins",
    "REGISTRY_PSW": "secret",
    "WORKSPACE": "/ws",
}


def stand_in(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\necho 'stand-in for {path.name} (tests/ci)'\n{body}\n")
    path.chmod(0o755)


def run(
    tmp_path: Path, script: str, kind: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    plan = tmp_path / "images.txt"
    plan.write_text(PLAN)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CI_", "GIT_", "TAG_"))}
    full = {
        **clean,
        "PATH": f"{tmp_path / 'bin'}:{clean['PATH']}",
        "IMAGES_PLAN": str(plan),
        "KANIKO_DIR": str(tmp_path / "kaniko"),
        **env,
    }
    return subprocess.run(
        ["sh", str(REPO / "scripts/sh" / script), kind],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=full,
    )


@pytest.fixture
def kaniko(tmp_path: Path) -> Path:
    (tmp_path / "kaniko").mkdir()
    log = tmp_path / "kaniko.log"
    stand_in(tmp_path / "kaniko" / "executor", f'echo "$*" >>{log}')
    return log


@pytest.mark.parametrize("env", [GITLAB, JENKINS], ids=["gitlab", "jenkins"])
def test_build_pushes_the_sha_and_the_release_version(
    tmp_path: Path, kaniko: Path, env: dict[str, str]
) -> None:
    tag = (
        {"CI_COMMIT_TAG": "digits-classifier/v1.2.3"}
        if env is GITLAB
        else {"TAG_NAME": "digits-classifier/v1.2.3"}
    )
    result = run(tmp_path, "build_image.sh", "serving", {**env, **tag})
    assert result.returncode == 0, result.stderr
    args = kaniko.read_text()
    assert f"--destination reg.test/mlops/digits-classifier:{SHA}" in args
    assert "--destination reg.test/mlops/digits-classifier:1.2.3" in args
    assert "digits-trainer" not in args
    config = (tmp_path / "kaniko/.docker/config.json").read_text()
    assert '"reg.test"' in config


@pytest.mark.parametrize("missing", ["GIT_COMMIT", "REGISTRY_PSW", "CI_REGISTRY"])
def test_build_without_a_ci_fact_names_it(tmp_path: Path, kaniko: Path, missing: str) -> None:
    env = {k: v for k, v in JENKINS.items() if k != missing}
    result = run(tmp_path, "build_image.sh", "serving", env)
    assert result.returncode == 2 and "is not set (GitLab sets it; on Jenkins:" in result.stderr
    assert not kaniko.exists()


@pytest.mark.parametrize("tag", ["digits-classifier/v01.2.3", "digits-classifier/v1.2", "v1.2.3.4"])
def test_build_refuses_a_tag_the_release_would_refuse(
    tmp_path: Path, kaniko: Path, tag: str
) -> None:
    """Issue 19 #6: `v01.2.3` built and pushed `:01.2.3`, then the release refused the tag."""
    result = run(tmp_path, "build_image.sh", "serving", {**GITLAB, "CI_COMMIT_TAG": tag})
    assert result.returncode == 2 and "strict semver" in result.stderr
    assert not kaniko.exists()


def trivy(tmp_path: Path, status: str) -> Path:
    (tmp_path / "bin").mkdir(exist_ok=True)
    log = tmp_path / "trivy.log"
    stand_in(
        tmp_path / "bin" / "trivy",
        f'echo "$* user=$TRIVY_USERNAME pass=$TRIVY_PASSWORD" >>{log}\n'
        f'code={status}; [ "$code" = found ] && code=$3; exit $code',
    )
    return log


@pytest.mark.parametrize("env", [GITLAB, JENKINS], ids=["gitlab", "jenkins"])
def test_scan_reads_the_private_registry_with_the_ci_credentials(
    tmp_path: Path, env: dict[str, str]
) -> None:
    log = trivy(tmp_path, "0")
    result = run(tmp_path, "scan_image.sh", "serving", env)
    assert result.returncode == 0, result.stderr
    line = log.read_text()
    assert f"reg.test/mlops/digits-classifier:{SHA}" in line and "--ignore-unfixed" in line
    user, password = (env.get("CI_REGISTRY_USER"), env.get("CI_REGISTRY_PASSWORD"))
    if env is JENKINS:
        user, password = env["REGISTRY_USR"], env["REGISTRY_PSW"]
    assert f"user={user} pass={password}" in line


def test_scan_tells_findings_from_a_scan_that_could_not_run(tmp_path: Path) -> None:
    """Issue 19 #10: a refused registry pull (trivy exit 1) looked like findings."""
    trivy(tmp_path, "1")
    broken = run(tmp_path, "scan_image.sh", "serving", GITLAB)
    assert broken.returncode == 3 and "could not scan" in broken.stderr
    trivy(tmp_path, "found")  # exits with the code --exit-code asked for
    vulnerable = run(tmp_path, "scan_image.sh", "serving", GITLAB)
    assert vulnerable.returncode == 1 and "HIGH/CRITICAL findings with a fix" in vulnerable.stderr
