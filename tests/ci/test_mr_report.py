"""The merge-request report built from two commits of a temporary git copy of the repo: a section
per model whose pipeline changed, with that model's gates, metrics and baselines."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from scripts import mr_report
from scripts.repo_copy import copy_repo

ID = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
DIGITS_METRICS = "models/digits/metrics/metrics.json"
DIGITS_RELEASE = "models/digits/metrics/release.json"
DIGITS_RECORD = "models/digits/registration.json"


def commit(repo: Path, message: str) -> None:
    subprocess.run(["git", *ID, "commit", "-qam", message], cwd=repo, check=True)


@pytest.fixture
def two_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, float]]:
    """A copy whose second commit made the digits model worse; breast cancer is unchanged."""
    monkeypatch.delenv("DELIVER_MODELS", raising=False)
    repo = copy_repo(tmp_path)
    old = json.loads((repo / DIGITS_METRICS).read_text())
    new = {**old, "accuracy": 0.9712, "macro_f1": 0.9688}
    (repo / DIGITS_METRICS).write_text(json.dumps(new))
    commit(repo, "worse model")
    return repo, old


def test_a_section_for_the_changed_model_only(two_commits: tuple[Path, dict[str, float]]) -> None:
    repo, old = two_commits
    assert mr_report.main(["--repo", str(repo), "--base", "HEAD~1"]) == 0
    text = (repo / "reports/mr/report.md").read_text()
    assert "## digits (app `digits-classifier`, `models/digits`)" in text
    assert "## breast-cancer" not in text  # its pipeline did not change
    delta = 0.9712 - old["accuracy"]
    assert f"| accuracy | {old['accuracy']:.4f} | 0.9712 | {delta:.4f} 🔻 |" in text
    # the gates as register recorded them (its record), not decided again on the new metrics
    recorded = json.loads((repo / DIGITS_RECORD).read_text())["gates"][0]
    assert f"| min_accuracy | {recorded['measured']:.4f} | 0.95 | pass |" in text
    assert "all release gates pass; released (recorded by register in" in text
    lr = old["baselines"]["logistic_regression"]["accuracy"]  # type: ignore[index]
    assert f"| baseline: logistic regression (accuracy) | {lr:.4f} | {lr:.4f} |" in text
    assert "![confusion_matrix.png]" not in text  # figures are not in git; none to show here
    assert "### Canary rehearsal" in text and "No rendered manifest changes" in text


def test_every_model_when_nothing_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DELIVER_MODELS", raising=False)
    repo = copy_repo(tmp_path)
    assert mr_report.main(["--repo", str(repo), "--base", "HEAD"]) == 0
    text = (repo / "reports/mr/report.md").read_text()
    assert "## digits (" in text and "## breast-cancer (" in text
    assert "no model changed: every model, as it is" in text
    assert "| recall (positive class) |" in text  # the binary model's headline


def test_the_ci_plan_chooses_the_models(
    two_commits: tuple[Path, dict[str, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _ = two_commits
    monkeypatch.setenv("DELIVER_MODELS", "breast-cancer")
    assert mr_report.main(["--repo", str(repo), "--base", "HEAD~1"]) == 0
    text = (repo / "reports/mr/report.md").read_text()
    assert "## breast-cancer (" in text and "## digits (" not in text


def record_a_failing_gate(repo: Path) -> None:
    """What register writes under `dvc exp run` when min_accuracy fails at 0.9."""
    record = json.loads((repo / DIGITS_RECORD).read_text())
    record["gates"][0] = {**record["gates"][0], "measured": 0.9, "passed": False}
    (repo / DIGITS_RECORD).write_text(json.dumps(record))
    verdict = {"gates_passed": False, "released": False, "failed_gates": 1}
    (repo / DIGITS_RELEASE).write_text(json.dumps(verdict))


def test_failing_gate_is_reported_and_exits_1(two_commits: tuple[Path, dict[str, float]]) -> None:
    repo, _ = two_commits
    record_a_failing_gate(repo)
    assert mr_report.main(["--repo", str(repo), "--base", "HEAD~1"]) == 1
    text = (repo / "reports/mr/report.md").read_text()
    assert "| min_accuracy | 0.9000 | 0.95 | FAIL |" in text
    assert "**a release gate fails** (1 failed); not released" in text


def test_the_recorded_verdict_is_shown_not_decided_again(
    two_commits: tuple[Path, dict[str, float]],
) -> None:
    repo, _ = two_commits
    # metrics that would fail min_accuracy, but register recorded a pass: the record stands
    metrics = json.loads((repo / DIGITS_METRICS).read_text())
    (repo / DIGITS_METRICS).write_text(json.dumps({**metrics, "accuracy": 0.9}))
    assert mr_report.main(["--repo", str(repo), "--base", "HEAD~1"]) == 0
    assert "all release gates pass" in (repo / "reports/mr/report.md").read_text()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read the recorded gate verdict"),
        ("{not json", "not a gate verdict: (top level): Invalid JSON"),
        ('{"gates_passed": true, "released": true}', "failed_gates: Field required"),
        ('{"gates_passed": "yes", "released": true, "failed_gates": 0}', "gates_passed:"),
        ('{"gates_passed": true, "released": true, "failed_gates": 2}', "with failed_gates 2"),
    ],
)
def test_a_missing_or_malformed_verdict_is_refused_naming_the_file(
    two_commits: tuple[Path, dict[str, float]], content: str | None, problem: str
) -> None:
    repo, _ = two_commits
    release = repo / DIGITS_RELEASE
    if content is None:
        release.unlink()
    else:
        release.write_text(content)
    with pytest.raises(SystemExit) as refused:
        mr_report.main(["--repo", str(repo), "--base", "HEAD~1"])
    message = str(refused.value)
    assert str(release) in message and problem in message, message
    assert not (repo / "reports/mr/report.md").exists()  # nothing written


def test_manifest_change_is_summarised(two_commits: tuple[Path, dict[str, float]]) -> None:
    repo, _ = two_commits
    staging = repo / "apps/breast-cancer/overlays/staging/kustomization.yaml"
    text = staging.read_text()
    staging.write_text(text.replace("newTag: ", "newTag: 9.9.9-", 1))
    commit(repo, "bump")
    assert mr_report.main(["--repo", str(repo), "--base", "HEAD~1"]) == 0
    body = (repo / "reports/mr/report.md").read_text()
    assert "breast-cancer/overlays/staging" in body and "changed" in body
    assert "## breast-cancer (" in body  # its app changed: its section is there


def test_default_base_follows_gitlab(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "develop")
    assert mr_report.default_base() == "origin/develop"
    monkeypatch.delenv("CI_MERGE_REQUEST_TARGET_BRANCH_NAME")
    assert mr_report.default_base() == "main"


def test_missing_base_falls_back_to_head(two_commits: tuple[Path, dict[str, float]]) -> None:
    repo, _ = two_commits
    assert mr_report.main(["--repo", str(repo), "--base", "no-such-branch"]) == 0
    assert "this branch vs `HEAD`" in (repo / "reports/mr/report.md").read_text()


def test_rehearsal_verdict_is_included(two_commits: tuple[Path, dict[str, float]]) -> None:
    repo, _ = two_commits
    (repo / "reports/rehearsal/digits").mkdir(parents=True, exist_ok=True)
    verdict = "### Canary rehearsal: Promoted (stand-in text)\n"
    (repo / "reports/rehearsal/digits/rehearsal.md").write_text(verdict)
    assert mr_report.main(["--repo", str(repo), "--base", "HEAD~1"]) == 0
    assert (
        "Canary rehearsal: Promoted (stand-in text)" in (repo / "reports/mr/report.md").read_text()
    )


def test_dvc_failure_is_a_clear_error(tmp_path: Path) -> None:
    """Outside a DVC repository dvc answers {} with exit 0: the report refuses to guess."""
    from ml.catalog import load_catalog

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    entries = load_catalog(Path(__file__).resolve().parents[2] / "models.yaml").entries
    with pytest.raises(SystemExit, match="found no models/breast-cancer/metrics/metrics.json"):
        mr_report.metrics_diff(tmp_path, "main", entries)
