"""apps/README.md's recipe: a second app in staging is 3 new files and no edit outside apps/.

The files are taken from the README's code blocks, written into a copy of the repository's
desired state, and the whole copy is validated like `make manifests` would."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from scripts.manifests.vocabulary import REPO_ROOT
from scripts.manifests.render import discover_targets
from scripts.manifests.validate import Checks, validate_all

APP = "fraud-detector"


def recipe_files(readme: Path, app: str) -> dict[str, str]:
    """{path: text} from the README blocks that follow a line naming a backquoted file path."""
    text = readme.read_text()
    blocks = re.findall(r"^`(apps/<app>/[^`]+)`:\n\n```\w*\n(.*?)```", text, re.S | re.M)
    return {path.replace("<app>", app): body.replace("<app>", app) for path, body in blocks}


def test_second_app_needs_three_files_and_validates(
    tmp_path: Path, contract_metrics: set[str]
) -> None:
    files = recipe_files(REPO_ROOT / "apps" / "README.md", APP)
    assert len(files) == 3
    assert all(path.startswith(f"apps/{APP}/") for path in files)
    for folder in ("apps", "rollouts", "clusters", "schemas"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    for rel, body in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(body)
    after = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert len(after - before) == 3

    checks = Checks(contract_metrics, "contract", root=tmp_path, promtool=False)
    results = validate_all(discover_targets(tmp_path), checks)
    problems = [str(p) for r in results for p in r.problems]
    assert problems == []
    by_target = {r.target: r for r in results}
    new = by_target[f"apps/{APP}/overlays/staging"]
    rollout = next(o for o in new.objects if o["kind"] == "Rollout")
    assert rollout["metadata"]["name"] == f"{APP}-server"
    assert rollout["metadata"]["namespace"] == f"{APP}-staging"
    image = rollout["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"registry.example.com/mlops/{APP}:0.1.0"
    config = json.loads((tmp_path / f"apps/{APP}/overlays/staging/config.json").read_text())
    appset = next(o for o in by_target["clusters/staging"].objects if o["kind"] == "ApplicationSet")
    patterns = [f["path"] for g in appset["spec"]["generators"] for f in g["git"]["files"]]
    assert any(Path(f"apps/{APP}/overlays/staging/config.json").match(p) for p in patterns)
    assert config["namespace"] == f"{APP}-staging"
