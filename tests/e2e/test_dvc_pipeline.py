"""The real `dvc repro` from a clean copy, then the DVC commands the README promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import FAST_EPOCHS, run

pytestmark = pytest.mark.e2e

STAGES = ["prepare", "validate", "train", "evaluate", "export", "register"]


def test_repro_from_clean_produces_every_output(pipeline_workspace: Path) -> None:
    dvc = yaml.safe_load((pipeline_workspace / "dvc.yaml").read_text())
    assert list(dvc["stages"]) == STAGES
    for stage in dvc["stages"].values():
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            name = out if isinstance(out, str) else next(iter(out))
            assert (pipeline_workspace / name).exists(), name
    record = json.loads((pipeline_workspace / "models/registration.json").read_text())
    assert record["metrics"]["accuracy"] >= 0.97  # the target on the default data
    assert record["latency"]["p99_ms"] <= 1.0  # exported-model p99 on CPU
    assert len(record["git_commit"]) >= 40


def test_registry_alias_points_at_the_registered_version(pipeline_workspace: Path) -> None:
    record = json.loads((pipeline_workspace / "models/registration.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline_workspace / 'mlflow.db'}")
    version = client.get_model_version_by_alias("digits-classifier", "candidate")
    assert str(version.version) == record["version"]
    assert version.tags["params_hash"] == record["params_hash"]
    run_data = client.get_run(record["run_id"]).data
    assert run_data.metrics["test_accuracy"] == pytest.approx(record["metrics"]["accuracy"])


def test_noop_repro_and_status(pipeline_workspace: Path) -> None:
    assert "Data and pipelines are up to date" in run(["dvc", "status"], pipeline_workspace).stdout
    out = run(["dvc", "repro"], pipeline_workspace).stdout
    assert "Running stage" not in out


def test_metrics_plots_push_pull(pipeline_workspace: Path) -> None:
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], pipeline_workspace).stdout)
    assert "accuracy" in json.dumps(shown) and "p99_ms" in json.dumps(shown)
    plots = run(["dvc", "plots", "show", "-o", "plots-html"], pipeline_workspace)
    assert plots.returncode == 0 and (pipeline_workspace / "plots-html/index.html").is_file()
    run(["dvc", "push"], pipeline_workspace)
    assert any((pipeline_workspace / ".dvcstore").rglob("*"))
    run(["dvc", "gc", "-w", "-f"], pipeline_workspace)  # keep only what the workspace uses
    (pipeline_workspace / "models/model.onnx").unlink()
    import shutil

    shutil.rmtree(pipeline_workspace / ".dvc/cache")
    run(["dvc", "pull"], pipeline_workspace)
    assert (pipeline_workspace / "models/model.onnx").stat().st_size > 1000


def test_exp_run_with_param_reruns_from_train(pipeline_workspace: Path) -> None:
    out = run(
        ["dvc", "exp", "run", "--temp", "-S", f"train.epochs={FAST_EPOCHS}"], pipeline_workspace
    ).stdout
    ran = [s for s in STAGES if f"Running stage '{s}'" in out]
    assert ran == ["train", "evaluate", "export", "register"], out
    shown = run(["dvc", "exp", "show", "--json"], pipeline_workspace).stdout
    epochs = [int(e) for e in re.findall(r'"epochs": (\d+)', shown)]
    assert FAST_EPOCHS in epochs and 40 in epochs  # the experiment and the workspace baseline
