"""The merge-request report built from two commits of a temporary git copy of the repo."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from scripts import report
from scripts.repo_copy import copy_repo

ID = ["-c", "user.email=t@example.com", "-c", "user.name=t"]


@pytest.fixture
def two_commits(tmp_path: Path) -> tuple[Path, dict[str, float]]:
    repo = copy_repo(tmp_path)
    old = json.loads((repo / "metrics/metrics.json").read_text())
    new = {**old, "accuracy": 0.9612, "macro_f1": 0.9588}
    (repo / "metrics/metrics.json").write_text(json.dumps(new))
    latency = json.loads((repo / "metrics/latency.json").read_text())
    (repo / "metrics/latency.json").write_text(json.dumps({**latency, "p99_ms": 0.5}))
    subprocess.run(["git", *ID, "commit", "-qam", "worse model"], cwd=repo, check=True)
    return repo, old


def test_diff_table_numbers(two_commits: tuple[Path, dict[str, float]]) -> None:
    repo, old = two_commits
    assert report.main(["--repo", str(repo), "--base", "HEAD~1"]) == 0
    text = (repo / "reports/mr/report.md").read_text()
    delta = 0.9612 - old["accuracy"]
    assert f"| accuracy | {old['accuracy']:.4f} | 0.9612 | {delta:.4f} 🔻 |" in text
    assert "| p99 latency (ms) |" in text and "| 0.5000 |" in text
    assert "| accuracy | 0.9612 | >= 0.95 | pass |" in text
    assert "![confusion_matrix.png]" not in text  # figures are not in git; none to show here
    assert "## Canary rehearsal" in text and "No rendered manifest changes" in text


def test_failing_gate_is_reported_and_exits_1(two_commits: tuple[Path, dict[str, float]]) -> None:
    repo, _ = two_commits
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    (repo / "metrics/metrics.json").write_text(json.dumps({**metrics, "accuracy": 0.9}))
    assert report.main(["--repo", str(repo), "--base", "HEAD~1"]) == 1
    text = (repo / "reports/mr/report.md").read_text()
    assert "| accuracy | 0.9000 | >= 0.95 | FAIL |" in text and "a release gate fails" in text


def test_manifest_change_is_summarised(two_commits: tuple[Path, dict[str, float]]) -> None:
    repo, _ = two_commits
    staging = repo / "apps/digits-classifier/overlays/staging/kustomization.yaml"
    text = staging.read_text()
    staging.write_text(text.replace("newTag: ", "newTag: 9.9.9-", 1))
    subprocess.run(["git", *ID, "commit", "-qam", "bump"], cwd=repo, check=True)
    assert report.main(["--repo", str(repo), "--base", "HEAD~1"]) == 0
    body = (repo / "reports/mr/report.md").read_text()
    assert "overlays/staging" in body and "changed" in body


def test_default_base_follows_gitlab(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "develop")
    assert report.default_base() == "origin/develop"
    monkeypatch.delenv("CI_MERGE_REQUEST_TARGET_BRANCH_NAME")
    assert report.default_base() == "main"


def test_missing_base_falls_back_to_head(two_commits: tuple[Path, dict[str, float]]) -> None:
    repo, _ = two_commits
    assert report.main(["--repo", str(repo), "--base", "no-such-branch"]) == 0
    assert "this branch vs `HEAD`" in (repo / "reports/mr/report.md").read_text()


def test_rehearsal_verdict_is_included(two_commits: tuple[Path, dict[str, float]]) -> None:
    repo, _ = two_commits
    (repo / "reports/rehearsal").mkdir(parents=True, exist_ok=True)
    (repo / "reports/rehearsal/rehearsal.md").write_text("**Verdict: Promoted** (stand-in text)\n")
    assert report.main(["--repo", str(repo), "--base", "HEAD~1"]) == 0
    assert "**Verdict: Promoted**" in (repo / "reports/mr/report.md").read_text()


def test_dvc_failure_is_a_clear_error(tmp_path: Path) -> None:
    """Outside a DVC repository dvc answers {} with exit 0: the report refuses to guess."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    with pytest.raises(SystemExit, match="found no metrics/latency.json, metrics/metrics.json"):
        report.metrics_diff(tmp_path, "main")
