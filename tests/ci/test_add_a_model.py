"""docs/ADD_A_MODEL.md, followed to the letter in a copy of the repository: scikit-learn's
wine data as a third model. Its files come from the recipe's own blocks (and apps/README.md's for
the app), no existing file but models.yaml changes, and the new model runs its pipeline (alone),
renders and validates its app, and passes its canary rehearsal."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.repo_copy import REPO, copy_repo
from tests.conftest import run
from tests.manifests.test_scaffold import recipe_files

pytestmark = pytest.mark.e2e

NAME = "wine"
ID = ["-c", "user.email=t@example.com", "-c", "user.name=t"]


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def block_after(text: str, marker: str) -> str:
    """The first fenced block after the line holding `marker`."""
    after = text[text.index(marker) :]
    found = re.search(r"```\w*\n(.*?)```", after, re.S)
    assert found, f"no code block after {marker!r}"
    return found.group(1)


def recipe(readme: str) -> dict[str, str]:
    """{path: text} of every file the recipe's steps create, for the model NAME."""
    steps = section(readme, "Steps")
    params = block_after(steps, "1. `models/<name>/params.yaml`")
    copied = re.search(r"2\. `models/<name>/dvc.yaml`: copy `([^`]+)`", steps)
    assert copied, "step 2 names the dvc.yaml to copy"
    assert "`- name: <name>`" in steps
    source = (REPO / copied.group(1)).read_text()
    dvc_yaml, count = re.subn(r"(?m)^  - name: [a-z0-9-]+", f"  - name: {NAME}", source, count=1)
    assert count == 1
    entry = block_after(steps, "3. One entry in `models.yaml`").replace("wine", NAME)
    files = {
        f"models/{NAME}/params.yaml": params,
        f"models/{NAME}/dvc.yaml": dvc_yaml,
        "models.yaml": (REPO / "models.yaml").read_text() + entry,
    }
    assert "4. The app's three files, exactly as `apps/README.md` shows them" in steps
    files.update(recipe_files(REPO / "apps" / "README.md", NAME))
    return files


@pytest.fixture(scope="module")
def added(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_repo(tmp_path_factory.mktemp("add-a-model"))
    for rel, text in recipe((REPO / "docs" / "ADD_A_MODEL.md").read_text()).items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    return repo


def test_no_existing_file_but_the_list_changes(added: Path) -> None:
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], added).stdout
    changed = sorted(line for line in status.splitlines() if not line.startswith("??"))
    assert changed == [" M models.yaml"]
    new = {line[3:] for line in status.splitlines() if line.startswith("??")}
    assert new == {
        f"models/{NAME}/params.yaml",
        f"models/{NAME}/dvc.yaml",
        f"apps/{NAME}/base/kustomization.yaml",
        f"apps/{NAME}/overlays/staging/kustomization.yaml",
        f"apps/{NAME}/overlays/staging/config.json",
    }


def test_the_new_models_pipeline_runs_alone_and_registers(added: Path) -> None:
    out = run(["dvc", "repro", f"models/{NAME}/dvc.yaml"], added).stdout
    stages = re.findall(r"Running stage '([^']+)'", out)
    assert stages and all(s.startswith(f"models/{NAME}/dvc.yaml:") for s in stages)
    assert "register: models:/wine/1 -> alias 'candidate'" in out
    assert "up to date" in run(["dvc", "status", f"models/{NAME}/dvc.yaml"], added).stdout
    status = run(["git", "status", "--porcelain", "models/digits", "models/breast-cancer"], added)
    assert status.stdout == ""  # nothing of the other models was touched


def test_the_list_and_the_ci_plan_know_it(added: Path) -> None:
    names = run([sys.executable, "-m", "scripts.models", "names"], added).stdout.split()
    assert names == ["digits", "breast-cancer", NAME]
    subprocess.run(["git", *ID, "add", "-A"], cwd=added, check=True)
    subprocess.run(["git", *ID, "commit", "-qm", "add wine"], cwd=added, check=True)
    affected = run([sys.executable, "-m", "scripts.models", "affected", "--base", "HEAD~1"], added)
    assert affected.stdout.splitlines() == [f"train: {NAME}", f"deliver: {NAME}"]
    tag = run([sys.executable, "-m", "scripts.models", "tag", f"{NAME}/v0.1.0"], added).stdout
    assert tag.split() == [NAME, "v0.1.0"]


def test_its_app_renders_and_validates_and_needs_no_generated_files(added: Path) -> None:
    overlay = f"apps/{NAME}/overlays/staging"
    validated = run(
        [sys.executable, "-m", "scripts.manifests", "validate", overlay, "--no-promtool"], added
    )
    assert "OK: 1 target(s)" in validated.stdout, validated.stdout
    assert "up to date" in run([sys.executable, "-m", "scripts.workflows", "--check"], added).stdout


def test_its_canary_rehearsal_promotes_it(added: Path, tmp_path: Path) -> None:
    """After its pipeline ran: its own test split as the load, its app's staging Rollout."""
    if not (added / f"models/{NAME}/model.onnx").is_file():
        run(["dvc", "repro", f"models/{NAME}/dvc.yaml"], added)
    done = run(
        [sys.executable, "-m", "scripts.rehearsal", "--name", NAME, "--out", str(tmp_path)],
        added,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"rehearsal of {NAME}: overlay" in done.stdout and "Promoted" in done.stdout
    assert (tmp_path / "rehearsal.md").is_file()
