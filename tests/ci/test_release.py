"""The release tool in temporary git copies of the repo: tags that name their app, write-back of
that app only, one changelog section and review branch per app, the registry version found by
content, idempotence, dry-run, a failure in the middle leaving everything as it was, and the
plain `vX.Y.Z` tags of a single-model fork."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from ml.registration import read_record
from scripts import release
from scripts.repo_copy import copy_repo

DIGITS = "digits-classifier"
STAGING = Path("apps/digits-classifier/overlays/staging/kustomization.yaml")
PRODUCTION = Path("apps/digits-classifier/overlays/production/kustomization.yaml")
CANCER_STAGING = Path("apps/breast-cancer/overlays/staging/kustomization.yaml")
ID = ["-c", "user.email=t@e", "-c", "user.name=t"]


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


def found_version(name: str, onnx_sha256: str) -> str:
    """Stands in for the registry lookup by content: every model is held by version 3."""
    return "3"


def run_apply(
    repo: Path, tag: str, calls: list[tuple[str, str, str]], validate: object = None
) -> list[str]:
    plan = release.build_plan(repo, tag, None, date(2026, 11, 22))
    check = validate or (lambda r, o: None)
    return release.apply(  # type: ignore[arg-type]
        repo, plan, validate=check, set_alias=fake_alias(calls), find_version=found_version
    )


@pytest.mark.parametrize(
    "tag",
    [
        "digits-classifier/1.2.3",
        "digits-classifier/v1.2",
        "digits-classifier/v01.2.3",
        "digits-classifier/v1.2.3-01",
        "digits-classifier/latest",
        "digits-classifier/v1.2.3 ",
    ],
)
def test_non_semver_versions_are_refused(
    repo: Path, tag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert release.main([tag]) == 1
    assert "not a release tag" in capsys.readouterr().err
    assert git(repo, "rev-parse", "HEAD") == head and not git(repo, "status", "--porcelain")


@pytest.mark.parametrize("tag", ["v1.2.3", "web/v1.2.3", "digits/v1.2.3", "1.2.3"])
def test_a_tag_naming_no_model_is_refused(
    repo: Path, tag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert release.main([tag]) == 1
    err = capsys.readouterr().err
    assert "names no model" in err and "digits-classifier/vX.Y.Z" in err


def test_dirty_tree_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text() + "\n")
    assert release.main([f"{DIGITS}/v1.0.0"]) == 1
    assert "uncommitted changes" in capsys.readouterr().err


def test_missing_registration_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert release.main([f"{DIGITS}/v1.0.0", "--registration", "models/nope.json"]) == 1
    assert "no registration record" in capsys.readouterr().err


def test_release_writes_back_and_prepares_production(repo: Path) -> None:
    calls: list[tuple[str, str, str]] = []
    before = (repo / STAGING).read_text()
    cancer_before = (repo / CANCER_STAGING).read_text()
    done = run_apply(repo, f"{DIGITS}/v1.4.0", calls)
    after = (repo / STAGING).read_text()
    changed = [
        line
        for line in git(repo, "diff", "HEAD~1", "--", str(STAGING)).splitlines()
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
    ]
    assert changed == [c for c in changed if "newTag" in c]
    assert changed.count("+    newTag: 1.4.0") == 2  # the service and the trainer image
    assert before.count("\n") == after.count("\n") and "# Release write-back" in after
    assert (repo / CANCER_STAGING).read_text() == cancer_before  # the other app is untouched
    log = (repo / "CHANGELOG.md").read_text()
    assert "## digits-classifier\n\n### digits-classifier/v1.4.0 - 2026-11-22" in log
    assert git(repo, "status", "--porcelain") == ""
    branch = f"release/{DIGITS}/v1.4.0-production"
    prod = git(repo, "show", f"{branch}:{PRODUCTION}")
    assert (
        prod.count("newTag: 1.4.0") == 2 and "newTag: 1.4.0" not in (repo / PRODUCTION).read_text()
    )
    assert calls == [(DIGITS, "3", "staging")]
    assert any(branch in line for line in done)


def test_two_apps_at_one_version_keep_an_entry_a_branch_and_an_alias_each(repo: Path) -> None:
    calls: list[tuple[str, str, str]] = []
    run_apply(repo, f"{DIGITS}/v2.0.0", calls)
    run_apply(repo, "breast-cancer/v2.0.0", calls)
    log = (repo / "CHANGELOG.md").read_text()
    assert "### digits-classifier/v2.0.0 - " in log and "### breast-cancer/v2.0.0 - " in log
    assert log.index("## digits-classifier") < log.index("## breast-cancer")
    branches = git(repo, "branch", "--list", "release/*").split()
    assert f"release/{DIGITS}/v2.0.0-production" in branches
    assert "release/breast-cancer/v2.0.0-production" in branches
    assert calls == [(DIGITS, "3", "staging"), ("breast-cancer", "3", "staging")]
    assert "newTag: 2.0.0" in (repo / CANCER_STAGING).read_text()
    assert (repo / CANCER_STAGING).read_text().count("breast-cancer-trainer") == 2


def test_an_overlay_without_the_trainer_releases_the_service_alone(repo: Path) -> None:
    text = (repo / STAGING).read_text()
    pinned = "  - name: digits-trainer\n"
    assert pinned in text
    kept, _, trainer = text.partition(pinned)
    (repo / STAGING).write_text(kept)  # the trainer entry was last: drop it
    git(repo, *ID, "commit", "-qam", "no continuous training in staging")
    run_apply(repo, f"{DIGITS}/v1.4.1", [])
    after = (repo / STAGING).read_text()
    assert after.count("newTag: 1.4.1") == 1 and "digits-trainer" not in after
    with pytest.raises(release.ReleaseError, match="exactly one images: entry named 'web'"):
        release.set_image_tag(text, "web", "1.0.0", STAGING)


def test_second_run_changes_nothing(repo: Path) -> None:
    run_apply(repo, f"{DIGITS}/v1.4.0", [])
    head = git(repo, "rev-parse", "HEAD")
    assert run_apply(repo, f"{DIGITS}/v1.4.0", []) == []
    assert git(repo, "rev-parse", "HEAD") == head
    assert (repo / "CHANGELOG.md").read_text().count("### digits-classifier/v1.4.0") == 1


def test_dry_run_prints_diff_and_changes_nothing(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert release.main([f"{DIGITS}/v2.0.0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "+    newTag: 2.0.0" in out and f"release/{DIGITS}/v2.0.0-production" in out
    assert f"{DIGITS}@staging -> the version holding ONNX sha256" in out
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == ""
    assert "v2.0.0-production" not in git(repo, "branch", "--list")


def test_failure_in_validation_restores_everything(repo: Path) -> None:
    head, staging = git(repo, "rev-parse", "HEAD"), (repo / STAGING).read_text()

    def broken(_: Path, overlay: Path) -> None:
        raise release.ReleaseError(f"{overlay}: invalid")

    with pytest.raises(release.ReleaseError):
        run_apply(repo, f"{DIGITS}/v3.0.0", [], validate=broken)
    assert git(repo, "rev-parse", "HEAD") == head and (repo / STAGING).read_text() == staging
    assert (
        not (repo / "CHANGELOG.md").exists() or "v3.0.0" not in (repo / "CHANGELOG.md").read_text()
    )
    assert git(repo, "status", "--porcelain") == ""


def test_failure_at_the_alias_undoes_commit_and_branch(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    plan = release.build_plan(repo, f"{DIGITS}/v3.1.0", None, date.today())

    def alias_down(name: str, version: str, alias: str) -> str | None:
        raise release.ReleaseError("MLflow: unreachable")

    with pytest.raises(release.ReleaseError, match="unreachable"):
        release.apply(
            repo,
            plan,
            validate=lambda r, o: None,
            set_alias=alias_down,
            find_version=found_version,
        )
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "branch", "--list", f"release/{DIGITS}/v3.1.0-production") == ""
    assert git(repo, "status", "--porcelain") == ""


def register_like_the_pipeline(repo: Path, model: str, extra_versions: int = 0) -> str:
    """Versions of the model in a real MLflow store, the last one tagged with the committed
    record's ONNX sha256 as the register stage tags it; returns that version."""
    from ml.tracking import start_tracking

    record = read_record(repo / "models" / model / "registration.json")
    start_tracking(record.model_name, repo)
    client = MlflowClient()
    client.create_registered_model(record.model_name)
    for _ in range(extra_versions):
        client.create_model_version(record.model_name, source="models/other.onnx")
    version = client.create_model_version(
        record.model_name,
        source=f"models/{model}/model.onnx",
        tags={"onnx_sha256": record.onnx_sha256},
    )
    return str(version.version)


def test_real_validator_and_real_mlflow(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """End to end through main(): the manifests tool validates, the version is found by the
    ONNX file's content among others, and MLflow moves that app's alias only."""
    version = register_like_the_pipeline(repo, "breast-cancer", extra_versions=2)
    assert release.main(["breast-cancer/v1.5.0"]) == 0, capsys.readouterr().err
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("breast-cancer", "staging").version) == version
    assert version == "3"
    assert "newTag: 1.5.0" in (repo / CANCER_STAGING).read_text()
    assert "newTag: 1.5.0" not in (repo / STAGING).read_text()


def test_a_model_no_registry_version_holds_is_refused_before_any_change(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert release.main([f"{DIGITS}/v1.5.1"]) == 1
    err = capsys.readouterr().err
    assert "no version of 'digits-classifier' holds the model with ONNX sha256" in err
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == ""


def test_broken_manifests_stop_the_release(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    register_like_the_pipeline(repo, "digits")
    base = repo / "apps/digits-classifier/base/kustomization.yaml"
    base.write_text(base.read_text() + "\nnotAField: 1\n")
    git(repo, *ID, "commit", "-qam", "break base")
    head = git(repo, "rev-parse", "HEAD")
    assert release.main([f"{DIGITS}/v1.6.0"]) == 1
    assert "invalid" in capsys.readouterr().err
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == ""


def test_a_single_model_fork_releases_plain_semver_tags(repo: Path) -> None:
    """models.yaml with one model and `tag_prefix: ""`: tags are vX.Y.Z, as before the monorepo."""
    catalog = yaml.safe_load((repo / "models.yaml").read_text())
    catalog["models"] = {"digits": {**catalog["models"]["digits"], "tag_prefix": ""}}
    (repo / "models.yaml").write_text(yaml.safe_dump(catalog))
    git(repo, *ID, "commit", "-qam", "a fork with digits only")
    calls: list[tuple[str, str, str]] = []
    run_apply(repo, "v1.0.0", calls)
    assert "### v1.0.0 - 2026-11-22" in (repo / "CHANGELOG.md").read_text()
    assert "release/v1.0.0-production" in git(repo, "branch", "--list")
    assert calls == [(DIGITS, "3", "staging")]
    with pytest.raises(release.ReleaseError, match="names no model"):
        release.build_plan(repo, f"{DIGITS}/v1.0.1", None, date.today())


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
    monkeypatch.setattr(release, "default_find_version", found_version)
    monkeypatch.setattr(release, "default_validate", lambda r, o: None)
    code = release.main([f"{DIGITS}/v1.7.0", "--push"])
    assert code == 0
    assert git(remote, "rev-parse", "main") == git(repo, "rev-parse", "HEAD")
    assert "newTag: 1.7.0" in git(remote, "show", f"main:{STAGING}")


def test_promote_pushes_production_branch(repo: Path, remote: Path) -> None:
    assert release.main([f"{DIGITS}/v1.8.0", "--promote"]) == 0
    shown = git(remote, "show", f"release/{DIGITS}/v1.8.0-production:{PRODUCTION}")
    assert "newTag: 1.8.0" in shown
    assert "newTag: 1.8.0" not in git(remote, "show", f"main:{PRODUCTION}")
