"""The release tool in temporary git copies of the repo: semver, write-back, review branch,
idempotence, dry-run, and a failure in the middle leaving everything as it was."""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path

import pytest
from mlflow import MlflowClient

from scripts import release
from scripts.repo_copy import copy_repo

STAGING = Path("apps/digits-classifier/overlays/staging/kustomization.yaml")
PRODUCTION = Path("apps/digits-classifier/overlays/production/kustomization.yaml")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("release-src"))


@pytest.fixture
def repo(pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ALIASES.clear()
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(pristine), str(clone)], check=True)
    monkeypatch.chdir(clone)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return clone


ALIASES: dict[tuple[str, str], str] = {}


def fake_alias(calls: list[tuple[str, str, str]]) -> object:
    """Stands in for the MLflow registry: remembers aliases, returns the previous version."""

    def set_alias(name: str, version: str, alias: str) -> str | None:
        calls.append((name, version, alias))
        previous = ALIASES.get((name, alias))
        ALIASES[(name, alias)] = version
        return previous

    return set_alias


def run_apply(
    repo: Path, tag: str, calls: list[tuple[str, str, str]], validate: object = None
) -> list[str]:
    registration = repo / "models/registration.json"
    plan = release.build_plan(repo, tag, "digits-classifier", registration, date(2026, 11, 22))
    check = validate or (lambda r, o: None)
    return release.apply(repo, plan, validate=check, set_alias=fake_alias(calls))  # type: ignore


@pytest.mark.parametrize(
    "tag", ["1.2.3", "v1.2", "v01.2.3", "v1.2.3-01", "latest", "v1.2.3 ", "v1.2.3/x"]
)
def test_non_semver_tags_are_refused(
    repo: Path, tag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert release.main([tag]) == 1
    assert "not a release tag" in capsys.readouterr().err
    assert git(repo, "rev-parse", "HEAD") == head and not git(repo, "status", "--porcelain")


def test_dirty_tree_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text() + "\n")
    assert release.main(["v1.0.0"]) == 1
    assert "uncommitted changes" in capsys.readouterr().err


def test_missing_registration_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert release.main(["v1.0.0", "--registration", "models/nope.json"]) == 1
    assert "no registration record" in capsys.readouterr().err


def test_release_writes_back_and_prepares_production(repo: Path) -> None:
    calls: list[tuple[str, str, str]] = []
    before = (repo / STAGING).read_text()
    done = run_apply(repo, "v1.4.0", calls)
    after = (repo / STAGING).read_text()
    changed = [
        line
        for line in git(repo, "diff", "HEAD~1", "--", str(STAGING)).splitlines()
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
    ]
    assert changed == [c for c in changed if "newTag" in c]
    assert changed.count("+    newTag: 1.4.0") == 2  # the service and the trainer image
    assert before.count("\n") == after.count("\n") and "# Release write-back" in after
    assert "## v1.4.0 - 2026-11-22" in (repo / "CHANGELOG.md").read_text()
    assert git(repo, "status", "--porcelain") == ""
    prod = git(repo, "show", f"release/v1.4.0-production:{PRODUCTION}")
    assert (
        prod.count("newTag: 1.4.0") == 2 and "newTag: 1.4.0" not in (repo / PRODUCTION).read_text()
    )
    record = json.loads((repo / "models/registration.json").read_text())
    assert calls == [(record["model_name"], record["version"], "staging")]
    assert any("release/v1.4.0-production" in line for line in done)


def test_an_overlay_without_the_trainer_releases_the_service_alone(repo: Path) -> None:
    text = (repo / STAGING).read_text()
    pinned = "  - name: digits-trainer\n"
    assert pinned in text
    kept, _, trainer = text.partition(pinned)
    (repo / STAGING).write_text(kept)  # the trainer entry was last: drop it
    git(repo, "commit", "-qam", "no continuous training in staging")
    run_apply(repo, "v1.4.1", [])
    after = (repo / STAGING).read_text()
    assert after.count("newTag: 1.4.1") == 1 and "digits-trainer" not in after
    with pytest.raises(release.ReleaseError, match="exactly one images: entry named 'web'"):
        release.set_image_tag(text, "web", "1.0.0", STAGING)


def test_second_run_changes_nothing(repo: Path) -> None:
    run_apply(repo, "v1.4.0", [])
    head = git(repo, "rev-parse", "HEAD")
    assert run_apply(repo, "v1.4.0", []) == []
    assert git(repo, "rev-parse", "HEAD") == head
    assert (repo / "CHANGELOG.md").read_text().count("## v1.4.0") == 1


def test_dry_run_prints_diff_and_changes_nothing(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert release.main(["v2.0.0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "+    newTag: 2.0.0" in out and "release/v2.0.0-production" in out and "@staging" in out
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == ""
    assert "release/v2.0.0-production" not in git(repo, "branch", "--list")


def test_failure_in_validation_restores_everything(repo: Path) -> None:
    head, staging = git(repo, "rev-parse", "HEAD"), (repo / STAGING).read_text()

    def broken(_: Path, overlay: Path) -> None:
        raise release.ReleaseError(f"{overlay}: invalid")

    with pytest.raises(release.ReleaseError):
        run_apply(repo, "v3.0.0", [], validate=broken)
    assert git(repo, "rev-parse", "HEAD") == head and (repo / STAGING).read_text() == staging
    assert (
        not (repo / "CHANGELOG.md").exists() or "v3.0.0" not in (repo / "CHANGELOG.md").read_text()
    )
    assert git(repo, "status", "--porcelain") == ""


def test_failure_at_the_alias_undoes_commit_and_branch(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    plan = release.build_plan(
        repo, "v3.1.0", "digits-classifier", repo / "models/registration.json", date.today()
    )

    def alias_down(name: str, version: str, alias: str) -> str | None:
        raise release.ReleaseError("MLflow: unreachable")

    with pytest.raises(release.ReleaseError, match="unreachable"):
        release.apply(repo, plan, validate=lambda r, o: None, set_alias=alias_down)
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "branch", "--list", "release/v3.1.0-production") == ""
    assert git(repo, "status", "--porcelain") == ""


def test_real_validator_and_real_mlflow(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """End to end through main(): the manifests tool validates, MLflow moves the alias."""
    from ml.tracking import start_tracking

    record = json.loads((repo / "models/registration.json").read_text())
    start_tracking()
    client = MlflowClient()
    client.create_registered_model(record["model_name"])
    for _ in range(int(record["version"])):
        client.create_model_version(record["model_name"], source="models/model.onnx")
    assert release.main(["v1.5.0"]) == 0, capsys.readouterr().err
    alias = client.get_model_version_by_alias(record["model_name"], "staging")
    assert str(alias.version) == record["version"]
    assert "newTag: 1.5.0" in (repo / STAGING).read_text()


def test_broken_manifests_stop_the_release(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = repo / "apps/digits-classifier/base/kustomization.yaml"
    base.write_text(base.read_text() + "\nnotAField: 1\n")
    git(repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qam", "break base")
    head = git(repo, "rev-parse", "HEAD")
    assert release.main(["v1.6.0"]) == 1
    assert "invalid" in capsys.readouterr().err
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == ""


@pytest.fixture
def remote(repo: Path, tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    git(bare, "config", "receive.advertisePushOptions", "true")
    git(repo, "remote", "set-url", "origin", str(bare))
    git(repo, "push", "-q", "origin", "HEAD:refs/heads/main")
    return bare


def test_push_publishes_staging_commit(
    repo: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(release, "default_set_alias", fake_alias([]))
    monkeypatch.setattr(release, "default_validate", lambda r, o: None)
    code = release.main(["v1.7.0", "--push"])
    assert code == 0
    assert git(remote, "rev-parse", "main") == git(repo, "rev-parse", "HEAD")
    assert "newTag: 1.7.0" in git(remote, "show", f"main:{STAGING}")


def test_promote_pushes_production_branch(repo: Path, remote: Path) -> None:
    assert release.main(["v1.8.0", "--promote"]) == 0
    shown = git(remote, "show", f"release/v1.8.0-production:{PRODUCTION}")
    assert "newTag: 1.8.0" in shown
    assert "newTag: 1.8.0" not in git(remote, "show", f"main:{PRODUCTION}")
