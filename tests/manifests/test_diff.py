"""`diff REF_A REF_B`: rendered differences per target between two commits."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from scripts.manifests.diff import diff_refs, diff_renders, diff_table, object_key
from scripts.manifests.vocabulary import REPO_ROOT


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_image_bump_shows_as_one_changed_rollout(tmp_path: Path) -> None:
    for folder in ("apps", "rollouts", "clusters"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "a")
    kfile = tmp_path / "apps/digits-classifier/overlays/staging/kustomization.yaml"
    service = "mlops/digits-classifier\n    newTag: 0.1.0"  # the service image only
    text = kfile.read_text()
    assert service in text
    kfile.write_text(text.replace(service, service.replace("0.1.0", "0.2.0")))
    _git(tmp_path, "commit", "-q", "-am", "b")

    diffs = {d.target: d for d in diff_refs("HEAD~1", "HEAD", root=tmp_path)}
    staging = diffs["apps/digits-classifier/overlays/staging"]
    assert staging.status == "changed"
    assert staging.changed == ["Rollout/digits-classifier-staging/digits-classifier-server"]
    assert "+        image: registry.example.com/mlops/digits-classifier:0.2.0" in staging.patch
    assert diffs["apps/digits-classifier/overlays/production"].status == "unchanged"
    table = diff_table(list(diffs.values()))
    assert "~ apps/digits-classifier/overlays/staging: Rollout/" in table


def test_added_removed_and_broken_targets() -> None:
    obj = {"kind": "ConfigMap", "metadata": {"name": "cfg-abcdefghij", "namespace": "n"}}
    assert object_key(obj) == "ConfigMap/n/cfg"
    diffs = {
        d.target: d
        for d in diff_renders(
            {"old": [obj], "same": [obj], "broken": [obj]},
            {"new": [obj], "same": [obj], "broken": "render error: boom"},
        )
    }
    assert diffs["old"].status == "removed" and diffs["old"].removed == ["ConfigMap/n/cfg"]
    assert diffs["new"].status == "added" and diffs["new"].added == ["ConfigMap/n/cfg"]
    assert diffs["same"].status == "unchanged" and diffs["same"].patch == ""
    assert diffs["broken"].status == "error" and "boom" in diffs["broken"].patch
