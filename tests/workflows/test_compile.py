"""Each app's Argo WorkflowTemplate, compiled from its model's dvc.yaml, is that pipeline's DAG:
same stages, same edges (as DVC itself computes them), same commands, run in the model's folder;
the committed YAML of every app is what the generator writes, and only opted-in apps get any."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hera.workflows import models as m

from ml.catalog import ModelEntry, load_catalog
from scripts.workflows.compile import (
    GPU_STAGES,
    WorkflowError,
    build_template,
    load_stages,
    stage_edges,
    stage_script,
)
from scripts.workflows.generate import COMPONENT, expected_files, main, stale
from tests.conftest import REPO, VENV_BIN

EXTRA_TASKS = {"checkout", "propose"}
CATALOG = load_catalog(REPO / "models.yaml")


@pytest.fixture(scope="module", params=CATALOG.names)
def entry(request: pytest.FixtureRequest) -> ModelEntry:
    return CATALOG.get(request.param)


def generated(entry: ModelEntry) -> Path:
    return REPO / "apps" / entry.app / "base" / COMPONENT


@pytest.fixture(scope="module")
def committed(entry: ModelEntry) -> dict[str, Any]:
    text = (generated(entry) / "workflowtemplate.yaml").read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@pytest.fixture(scope="module")
def dvc_graph(entry: ModelEntry) -> tuple[set[str], set[tuple[str, str]], dict[str, str]]:
    """Stages, edges (upstream, downstream) and commands of the model's pipeline as DVC itself
    sees them (templating resolved)."""
    dot = subprocess.run(
        [str(VENV_BIN / "dvc"), "dag", "--dot", entry.pipeline],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    prefix = f"{entry.pipeline}:"
    nodes, edges = set(), set()
    for line in dot.splitlines():
        parts = [p.strip().strip('";').removeprefix(prefix) for p in line.split("->")]
        if len(parts) == 2:
            edges.add((parts[0], parts[1]))
        elif line.strip().endswith('";'):
            nodes.add(parts[0])
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        commands = {
            s.name: " ".join(str(s.cmd).split())
            for s in repo.index.stages
            if s.addressing.startswith(prefix)
        }
    return nodes, edges, commands


def tasks_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (dag,) = [t for t in document["spec"]["templates"] if "dag" in t]
    return {task["name"]: task for task in dag["dag"]["tasks"]}


def templates_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in document["spec"]["templates"] if "container" in t}


def test_the_step_graph_is_dvc_yamls_stage_graph(
    committed: dict[str, Any], dvc_graph: tuple[set[str], set[tuple[str, str]], dict[str, str]]
) -> None:
    nodes, edges, commands = dvc_graph
    tasks = tasks_of(committed)
    assert set(tasks) - EXTRA_TASKS == nodes
    compiled = {
        (dep, name)
        for name, task in tasks.items()
        for dep in task.get("dependencies", [])
        if name not in EXTRA_TASKS and dep not in EXTRA_TASKS
    }
    assert compiled == edges
    # the extra steps only bracket the DAG: checkout before the roots, propose after the leaves
    roots = nodes - {b for _, b in edges}
    leaves = nodes - {a for a, _ in edges}
    assert {n for n, t in tasks.items() if t.get("dependencies") == ["checkout"]} == roots
    assert set(tasks["propose"]["dependencies"]) == leaves
    templates = templates_of(committed)
    for stage, command in commands.items():
        script = templates[tasks[stage]["template"]]["container"]["args"][0].splitlines()
        assert command in script, f"{stage}: command differs from dvc.yaml"
        assert script[1] == f"cd /workspace/repo/{entry_of(committed).folder}", stage


def entry_of(document: dict[str, Any]) -> ModelEntry:
    description = document["metadata"]["annotations"]["workflows.argoproj.io/description"]
    return next(e for e in CATALOG.entries if description.startswith(e.pipeline))


def test_each_step_pulls_its_inputs_then_commits_and_pushes_its_outputs(
    committed: dict[str, Any],
) -> None:
    templates = templates_of(committed)
    train = templates["train"]["container"]["args"][0].splitlines()
    assert train[0] == "set -euo pipefail"
    assert "dvc pull --allow-missing data/prepared" in train
    assert train.index("dvc pull --allow-missing data/prepared") < train.index(
        "dvc commit --force train"
    )
    assert train[-1] == "dvc push train"
    register = templates["register"]["container"]["args"][0]
    # register's outputs are not cached by DVC: nothing to push, but dvc.lock records them
    assert "dvc commit --force register" in register and "dvc push" not in register
    for name, template in templates.items():
        script = template["container"]["args"][0]
        done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert done.returncode == 0, f"{name}: {done.stderr}"


def test_gpu_only_where_asked_and_every_step_has_resources_and_retries(
    committed: dict[str, Any],
) -> None:
    for name, template in templates_of(committed).items():
        resources = template["container"]["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(
            resources["limits"]
        ), name
        assert template["retryStrategy"]["limit"] == 2, name
        gpu = name in GPU_STAGES
        assert ("nvidia.com/gpu" in resources["limits"]) == gpu, name
        assert ("nodeSelector" in template) == gpu and ("tolerations" in template) == gpu, name
        assert template["container"]["securityContext"]["readOnlyRootFilesystem"] is True
    train = templates_of(committed)["train"]
    assert train["container"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    trainer = entry_of(committed).trainer_image
    assert train["container"]["image"] == f"{trainer}:unreleased"
    assert train["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]


def test_the_generated_yaml_round_trips_through_heras_argo_models(entry: ModelEntry) -> None:
    """Hera's models come from Argo's OpenAPI spec: a field they do not know would be dropped."""
    for name, kind in (
        ("workflowtemplate.yaml", m.WorkflowTemplate),
        ("cronworkflow.yaml", m.CronWorkflow),
    ):
        document = yaml.safe_load((generated(entry) / name).read_text())
        parsed = kind.model_validate(document)
        again = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
        assert again == document, name


def test_committed_files_are_what_the_generator_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--check"]) == 0, capsys.readouterr().err
    assert "up to date" in capsys.readouterr().out


def copy_inputs(target: Path) -> Path:
    """What the generator reads: models.yaml, the params, each model's dvc.yaml, each app's base
    kustomization (its opt-in); nothing generated."""
    for rel in ("models.yaml", "params.yaml"):
        shutil.copy(REPO / rel, target / rel)
    for entry in CATALOG.entries:
        for rel in (entry.pipeline, entry.params, f"apps/{entry.app}/base/kustomization.yaml"):
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / rel, target / rel)
    return target


def test_a_changed_schedule_fails_the_check_until_regenerated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_inputs(tmp_path)
    assert main(["--root", str(root)]) == 0  # writes everything into the copy
    own = root / "models/digits/params.yaml"
    params = own.read_text()
    own.write_text(
        params.replace('schedule: "0 3 * * 1"', 'schedule: "0 4 * * 2"').replace(
            'schedule: "17 * * * *"', 'schedule: "5 * * * *"'
        )
    )
    capsys.readouterr()
    assert main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "+  - 0 4 * * 2" in err and '+  schedule: "5 * * * *"' in err
    assert "run `make workflows`" in err
    assert "breast-cancer" not in err  # the other app is untouched
    assert main(["--root", str(root)]) == 0
    assert main(["--check", "--root", str(root)]) == 0
    folder = root / "apps/digits-classifier/base" / COMPONENT
    cron = yaml.safe_load((folder / "cronworkflow.yaml").read_text())
    assert cron["spec"]["schedules"] == ["0 4 * * 2"]
    assert 'schedule: "5 * * * *"' in (folder / "cronjob.yaml").read_text()


def test_only_apps_that_opt_in_get_generated_files(tmp_path: Path) -> None:
    root = copy_inputs(tmp_path)
    base = root / "apps/breast-cancer/base/kustomization.yaml"
    base.write_text(base.read_text().replace("  - continuous-training\n", ""))
    files = expected_files(root)
    assert files and all("apps/digits-classifier/" in str(p) for p in files)
    assert main(["--root", str(root)]) == 0
    assert not (root / "apps/breast-cancer/base" / COMPONENT).exists()
    # a folder generated for an app that no longer opts in is stale
    (root / "apps/breast-cancer/base" / COMPONENT).mkdir()
    assert any("generated for no app" in d for d in stale(root, expected_files(root)))


def test_generator_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_inputs(tmp_path)
    (root / "models/digits/dvc.yaml").write_text("vars: [other.yaml]\nstages: {}\n")
    assert main(["--root", str(root)]) == 1
    assert "vars from a file" in capsys.readouterr().err
    assert main(["--root", str(tmp_path / "nowhere")]) == 1


def test_stage_parsing_edge_cases(tmp_path: Path) -> None:
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "a": {"cmd": ["echo 1", "echo 2"], "outs": ["out/dir"]},
                    "b": {
                        "cmd": "cat out/dir/x",
                        "deps": ["out/dir/x"],
                        "metrics": [{"m.json": {"cache": False}}],
                    },
                    "c": {"cmd": "true", "deps": ["m.json", "out"]},
                }
            }
        )
    )
    stages = load_stages(dvc_yaml)
    assert stages[0].cmd == "echo 1 && echo 2"
    assert stage_edges(stages) == {"a": [], "b": ["a"], "c": ["a", "b"]}
    # only cached outputs can be pulled from the remote
    script = stage_script(stages[2], stages, "models/x")
    assert "dvc pull --allow-missing out/dir" in script and "cd /workspace/repo/models/x" in script
    assert "m.json" not in script.split("dvc pull")[1].split("\n")[0]
    template = build_template(stages, 1.0, CATALOG.entries[0]).to_dict()
    assert template["spec"]["activeDeadlineSeconds"] == 3600
    dvc_yaml.write_text(
        yaml.safe_dump(
            {"vars": [{"name": "m"}], "stages": {"s": {"cmd": "run --name ${name} ${ other }"}}}
        )
    )
    with pytest.raises(WorkflowError, match="other"):
        load_stages(dvc_yaml)
    dvc_yaml.write_text(
        yaml.safe_dump({"vars": [{"name": "m"}], "stages": {"s": {"cmd": "x ${name}"}}})
    )
    assert load_stages(dvc_yaml)[0].cmd == "x m"
    dvc_yaml.write_text(yaml.safe_dump({"stages": {"grid": {"foreach": [1, 2], "do": {}}}}))
    with pytest.raises(WorkflowError, match="grid"):
        load_stages(dvc_yaml)


def test_stale_reports_missing_files(tmp_path: Path) -> None:
    files = expected_files(copy_inputs(tmp_path))
    assert len(stale(tmp_path, files)) == len(files) == 7 * len(CATALOG.entries)
