"""The pipelines themselves: the real .gitlab-ci.yml through gitlab-ci-local (schema, which jobs
run for merge requests, main and tags, and real shell-executor runs of the test job: lint and a
test subset, the report and manifest validation). The Jenkinsfile is run by JenkinsPipelineUnit
(tests/ci/jenkins, driven by test_jenkinsfile.py), which also checks it runs GitLab's commands."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from scripts.node_tools import ensure_node_modules
from scripts.repo_copy import REPO, copy_repo

TOOLS = REPO / "tools" / "gitlab-ci-local"
VENV = Path(sys.executable).parent.parent
ID = ["-c", "user.email=t@example.com", "-c", "user.name=t"]


@pytest.fixture(scope="module")
def glcl() -> str:
    ensure_node_modules(TOOLS)
    return str(TOOLS / "node_modules" / ".bin" / "gitlab-ci-local")


def listed(glcl: str, cwd: Path, *variables: str) -> dict[str, str]:
    """{job: needs} of the pipeline gitlab-ci-local builds for these predefined variables."""
    args = [a for v in variables for a in ("--variable", v)]
    result = subprocess.run([glcl, "--list", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "json schema validated" in result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("name "))
    jobs = {}
    for line in lines[start + 1 :]:
        if line.strip():
            parts = line.split()
            jobs[parts[0]] = parts[-1] if parts[-1].startswith("[") else ""
    return jobs


def scratch(tmp_path: Path, change: Callable[[Path], None]) -> tuple[Path, str]:
    """A git copy of the repo whose origin/main is the copy as it is, with `change` committed on
    top: what a merge request's pipeline sees. Returns (repo, base sha)."""
    repo = copy_repo(tmp_path / "repo")
    base = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "update-ref", "refs/remotes/origin/main", base], cwd=repo, check=True)
    change(repo)
    subprocess.run(["git", *ID, "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", *ID, "commit", "-qm", "change"], cwd=repo, check=True)
    return repo, base


def append(path: str, text: str = "\n# a change\n") -> Callable[[Path], None]:
    def change(repo: Path) -> None:
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((target.read_text() if target.exists() else "") + text)

    return change


def plan_of(glcl: str, repo: Path, *variables: str) -> dict[str, str]:
    """Run the real plan job (shell executor, this venv) and read the dotenv it hands on."""
    result = run_job(glcl, repo, "plan", *variables)
    assert result.returncode == 0 and "PASS  plan" in result.stdout, result.stdout[-3000:]
    lines = (repo / ".bench/ci/plan.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


MR = ("CI_PIPELINE_SOURCE=merge_request_event", "CI_COMMIT_BRANCH=")
ALWAYS = ["plan", "test", "manifests", "kubeconform"]


@pytest.mark.parametrize(
    ("case", "change", "train", "deliver"),
    [
        (
            "one model's folder",
            append("models/breast-cancer/params.yaml"),
            "breast-cancer",
            "breast-cancer",
        ),
        (
            "shared ml/ code",
            append("ml/stages/train.py"),
            "digits breast-cancer",
            "digits breast-cancer",
        ),
        (
            "one app's overlay",
            append("apps/breast-cancer/overlays/staging/replicas.yaml"),
            "",
            "breast-cancer",
        ),
        (
            "shared canary analysis",
            append("rollouts/analysis/error-rate.yaml"),
            "",
            "digits breast-cancer",
        ),
        ("docs only", append("README.md", "\nmore words\n"), "", ""),
        ("docs inside a model's folder", append("models/digits/NOTES.md", "notes\n"), "", ""),
    ],
)
def test_a_merge_request_works_on_the_models_its_change_touches(
    glcl: str, tmp_path: Path, case: str, change: Callable[[Path], None], train: str, deliver: str
) -> None:
    repo, base = scratch(tmp_path, change)
    jobs = listed(glcl, repo, *MR)
    expected = list(ALWAYS)
    if train:  # the GPU runner starts only when some model trains
        expected += ["launch-runner", "train", "perf-gate"]
    if deliver:
        expected += ["report", "rehearse"]
    assert sorted(jobs) == sorted(expected), case
    if train:
        assert jobs["train"] == "[launch-runner,plan]"
    if deliver:  # issue 19 #8: the report comes after the rehearsal, to show its verdict
        assert jobs["report"] == "[plan,train,rehearse]"
    plan = plan_of(glcl, repo, *MR, f"CI_MERGE_REQUEST_DIFF_BASE_SHA={base}")
    assert plan == {"TRAIN_MODELS": train, "DELIVER_MODELS": deliver}, case


def test_adding_a_model_to_the_list_trains_that_model_only(glcl: str, tmp_path: Path) -> None:
    repo, base = scratch(tmp_path, append("models.yaml", "  wine: {}\n"))
    assert "train" in listed(glcl, repo, *MR)
    plan = plan_of(glcl, repo, *MR, f"CI_MERGE_REQUEST_DIFF_BASE_SHA={base}")
    assert plan == {"TRAIN_MODELS": "wine", "DELIVER_MODELS": "wine"}


def test_main_pipeline(glcl: str, tmp_path: Path) -> None:
    repo, base = scratch(tmp_path, append("models/digits/params.yaml"))
    # named explicitly: gitlab-ci-local otherwise takes the checkout's branch (a feature branch)
    jobs = listed(glcl, repo, "CI_COMMIT_BRANCH=main")
    assert "report" not in jobs and "release" not in jobs
    assert {"build-serving", "scan-serving", "train", "rehearse"} <= set(jobs)
    plan = plan_of(
        glcl,
        repo,
        "CI_COMMIT_BRANCH=main",
        f"CI_COMMIT_BEFORE_SHA={base}",
        "CI_REGISTRY_IMAGE=reg.test/mlops",
    )
    assert plan == {"TRAIN_MODELS": "digits", "DELIVER_MODELS": "digits"}
    # what the kaniko and trivy jobs read: each delivered model's images in the project registry
    images = (repo / ".bench/ci/images.txt").read_text().splitlines()
    assert images == [
        "serving models/digits reg.test/mlops/digits-classifier",
        "trainer models/digits reg.test/mlops/digits-trainer",
    ]


def test_tag_pipeline_releases_the_tagged_app(glcl: str, tmp_path: Path) -> None:
    repo, _ = scratch(tmp_path, append("README.md", "\n"))
    tag = ("CI_COMMIT_TAG=breast-cancer/v1.2.3", "CI_COMMIT_BRANCH=")
    jobs = listed(glcl, repo, *tag)
    assert list(jobs)[-2:] == ["release", "promote"]
    assert "train" not in jobs and "fetch-model" in jobs and "report" not in jobs
    assert jobs["build-serving"] == "[plan,train,fetch-model]"
    assert plan_of(glcl, repo, *tag) == {"TRAIN_MODELS": "", "DELIVER_MODELS": "breast-cancer"}
    assert listed(glcl, repo, "CI_COMMIT_TAG=v1.2.3", "CI_COMMIT_BRANCH=") != {}  # a fork's tag


TAGS = [
    "digits-classifier/v1.2.3",
    "digits-classifier/v1.2.3-rc.1",
    "digits-classifier/v1.2.3+build.7",
    "v0.0.0",
    "digits-classifier/v01.2.3",
    "digits-classifier/v1.02.3",
    "digits-classifier/v1.2.3-01",
    "digits-classifier/v1.2",
    "digits-classifier/1.2.3",
    "Digits/v1.2.3",
]


def test_the_pipeline_admits_exactly_the_tags_the_release_accepts() -> None:
    """Issue 19 #6: `v01.2.3` built and pushed `:01.2.3`, then the release refused it. The
    workflow rule's regex (RE2 and JavaScript alike; Python's `re` reads this subset the same)
    against scripts/release.py's SEMVER. Read from the file, not through gitlab-ci-local: its
    `--list` (4.60) ignores `workflow:rules` (a tag `foo` lists every job)."""
    from scripts.release import SEMVER

    rules = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())["workflow"]["rules"]
    rule = next(r["if"] for r in rules if "CI_COMMIT_TAG =~" in r["if"])
    pattern = re.compile(rule.split("=~ /", 1)[1].rsplit("/", 1)[0])
    for tag in TAGS:
        prefix_ok = re.fullmatch(r"([a-z0-9][a-z0-9-]*/)?", tag[: tag.rfind("/") + 1]) is not None
        expected = prefix_ok and SEMVER.match(tag.rsplit("/", 1)[-1]) is not None
        assert (pattern.match(tag) is not None) == expected, tag


def test_schema_errors_are_caught(glcl: str, tmp_path: Path) -> None:
    broken = (
        (REPO / ".gitlab-ci.yml")
        .read_text()
        .replace("  script:\n    - make ci-plan", "  scirpt:\n    - make ci-plan")
    )
    (tmp_path / ".gitlab-ci.yml").write_text(broken)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    result = subprocess.run([glcl, "--list"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "plan must have script" in result.stderr


def test_every_job_runs_one_make_target_or_its_script() -> None:
    config = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))
    for name, job in config.items():
        if not isinstance(job, dict) or "script" not in job or name.startswith("."):
            continue
        assert len(job["script"]) == 1, f"{name}: one command per job"
        command = job["script"][0]
        make = re.fullmatch(r"make ([a-z-]+)( TAG=\$CI_COMMIT_TAG)?", command)
        script = re.fullmatch(r"sh (scripts/sh/[a-z_]+\.sh)( \S+)?", command)
        assert make or script, f"{name}: {command!r} is neither a make target nor a CI script"
        if make:
            assert make.group(1) in targets, command
        else:
            assert script is not None
            path = script.group(1)
            assert (REPO / path).is_file() and path in (REPO / "Makefile").read_text()


@pytest.fixture(scope="module")
def ci_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git copy with a second commit, so the report has a base to compare against; the copy
    reuses this venv (VENV=...) instead of bootstrapping a new one."""
    repo = copy_repo(tmp_path_factory.mktemp("ci"))
    for name in ("models/digits/model.onnx", "models/digits/reports/figures"):
        source = REPO / name
        if source.is_file():
            shutil.copy2(source, repo / name)
        elif source.is_dir():
            shutil.copytree(source, repo / name)
    metrics = repo / "models" / "digits" / "metrics" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"accuracy": 0.', '"accuracy": 0.99', 1))
    base = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", *ID, "commit", "-qam", "candidate"], cwd=repo, check=True)
    # rules:changes compare with the target branch, as GitLab does for a merge request
    subprocess.run(["git", "update-ref", "refs/remotes/origin/main", base], cwd=repo, check=True)
    return repo


def run_job(
    glcl: str, repo: Path, job: str, *variables: str, path: str = ""
) -> subprocess.CompletedProcess[str]:
    args = ["--variable", f"VENV={VENV}", *(a for v in variables for a in ("--variable", v))]
    env = {
        **os.environ,
        "PATH": f"{path}{os.pathsep}{os.environ['PATH']}" if path else os.environ["PATH"],
    }
    return subprocess.run(
        [glcl, "--force-shell-executor", *args, job],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
    )


def test_test_job_runs_a_subset(glcl: str, ci_copy: Path) -> None:
    result = run_job(glcl, ci_copy, "test", "PYTEST_ARGS=tests/unit/test_config.py --no-cov")
    assert result.returncode == 0 and "PASS  test" in result.stdout, result.stdout[-3000:]
    # exactly that file's tests ran: the job passed PYTEST_ARGS through, not the whole suite
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/unit/test_config.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    count = re.search(r"(\d+) tests? collected", collected)
    assert count, collected
    assert f"{count[1]} passed" in result.stdout


def test_manifests_job_runs(glcl: str, ci_copy: Path) -> None:
    result = run_job(glcl, ci_copy, "manifests")
    assert result.returncode == 0 and "PASS  manifests" in result.stdout, result.stdout[-3000:]
    assert any((ci_copy / ".bench/manifests/rendered").glob("*.yaml"))


def test_report_job_builds_and_posts(glcl: str, ci_copy: Path, tmp_path: Path) -> None:
    """`cml` is not installable here: a stand-in records the call it gets, and says it is one."""
    log = tmp_path / "cml.log"
    fake = tmp_path / "bin" / "cml"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "cml stand-in (tests/ci): $*" | tee -a {log}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    result = run_job(glcl, ci_copy, "report", "BASE=HEAD~1", path=str(fake.parent))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "comment update reports/mr/report.md --watermark-title=model report" in log.read_text()
    report = (ci_copy / "reports/mr/report.md").read_text()
    assert "## digits (" in report and "| accuracy |" in report and "0.99" in report


def test_retrain_pipeline_retrains_the_triggered_model(glcl: str, tmp_path: Path) -> None:
    repo, _ = scratch(tmp_path, append("README.md", "\n"))
    trigger = ("CI_PIPELINE_SOURCE=trigger", "RETRAIN=true", "RETRAIN_MODEL=digits")
    jobs = listed(glcl, repo, *trigger)
    assert jobs == {
        "plan": "",
        "launch-runner": "[]",
        "train": "[launch-runner,plan]",
        "propose-retrain": "[plan,train]",
    }
    assert plan_of(glcl, repo, *trigger) == {"TRAIN_MODELS": "digits", "DELIVER_MODELS": "digits"}


def test_propose_retrain_opens_a_review_branch(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    subprocess.run(["git", "config", "receive.advertisePushOptions", "true"], cwd=bare, check=True)
    subprocess.run(["git", "remote", "add", "origin", str(bare)], cwd=repo, check=True)
    script = ["sh", "scripts/sh/propose_retrain.sh", "retrain/42", "drift"]
    same = subprocess.run(script, cwd=repo, capture_output=True, text=True, check=True)
    assert "nothing to propose" in same.stdout  # an identical model is not proposed
    subprocess.run(["git", "checkout", "-q", "main"], cwd=repo, check=True)
    subprocess.run(["git", "branch", "-D", "retrain/42"], cwd=repo, check=True, capture_output=True)
    metrics = repo / "models" / "breast-cancer" / "metrics" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"accuracy": 0.', '"accuracy": 0.1', 1))
    card = repo / "models" / "breast-cancer" / "model_card.md"
    card.write_text(card.read_text() + "\n")
    done = subprocess.run(script, cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shown = subprocess.run(
        ["git", "log", "-1", "--format=%s", "retrain/42"], cwd=bare, capture_output=True, text=True
    )
    assert shown.stdout.strip() == "Retrain (drift): retrain/42"
    files = subprocess.run(
        ["git", "show", "--name-only", "--format=", "retrain/42"],
        cwd=bare,
        capture_output=True,
        text=True,
    ).stdout.split()
    # every changed tracked output of the model is proposed, not only its lock and metrics
    assert files == [
        "models/breast-cancer/metrics/metrics.json",
        "models/breast-cancer/model_card.md",
    ]
