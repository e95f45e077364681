"""The real `dvc repro` of every model from a clean copy (a fresh clone), then the DVC commands the
README promises: each model's outputs, a clean `git status`, one model's change rerunning nothing
of the other, experiments on one model's params, metrics, plots, push and pull."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from ml.registration import local_record_path, read_record
from tests.conftest import FAST_EPOCHS, run

pytestmark = pytest.mark.e2e

STAGES = ["prepare", "validate", "train", "evaluate", "export", "register"]
MODELS = {"digits": "digits-classifier", "breast-cancer": "breast-cancer"}


def ran(output: str) -> list[str]:
    """`models/<name>/dvc.yaml:<stage>` of every stage DVC ran."""
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.mark.parametrize("model", MODELS)
def test_repro_from_clean_produces_every_output(pipeline_workspace: Path, model: str) -> None:
    folder = pipeline_workspace / "models" / model
    dvc = yaml.safe_load((folder / "dvc.yaml").read_text())
    assert list(dvc["stages"]) == STAGES
    for stage in dvc["stages"].values():
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            name = out if isinstance(out, str) else next(iter(out))
            assert (folder / name).exists(), name
    record = read_record(folder / "registration.json")
    assert record.metrics["accuracy"] >= 0.97  # the target for both shipped models


def test_a_fresh_clone_leaves_git_status_clean(pipeline_workspace: Path) -> None:
    """`make pipeline` from clean (every stage, and register forced where dvc skipped it): every
    tracked output (dvc.lock, metrics, plots, cards, records) came out byte for byte as committed,
    and no machine-local fact landed in a tracked file."""
    status = run(["git", "status", "--porcelain"], pipeline_workspace).stdout
    assert status == "", status


@pytest.mark.parametrize(("model", "registered"), MODELS.items())
def test_registry_alias_points_at_the_registered_version(
    pipeline_workspace: Path, model: str, registered: str
) -> None:
    folder = pipeline_workspace / "models" / model
    local = read_record(local_record_path(folder / "registration.json"))
    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline_workspace / 'mlflow.db'}")
    version = client.get_model_version_by_alias(registered, "candidate")
    assert str(version.version) == local.version
    assert version.tags["onnx_sha256"] == local.onnx_sha256
    run_data = client.get_run(str(local.run_id)).data
    assert run_data.metrics["test_accuracy"] == pytest.approx(local.metrics["accuracy"])
    experiment = client.get_experiment(client.get_run(str(local.run_id)).info.experiment_id)
    assert experiment.name == registered  # models.yaml: each model its own experiment


def test_noop_repro_and_status(pipeline_workspace: Path) -> None:
    assert "Data and pipelines are up to date" in run(["dvc", "status"], pipeline_workspace).stdout
    assert ran(run(["dvc", "repro"], pipeline_workspace).stdout) == []


def test_one_models_change_reruns_nothing_of_the_other(pipeline_workspace: Path) -> None:
    params = pipeline_workspace / "models/breast-cancer/params.yaml"
    original = params.read_text()
    try:
        params.write_text(original.replace("min_class_share: 0.2", "min_class_share: 0.19"))
        assert "models/digits" not in run(["dvc", "status"], pipeline_workspace).stdout
        stages = ran(run(["dvc", "repro"], pipeline_workspace).stdout)
        # validate reads the key; register records every param that made the model
        assert stages == [f"models/breast-cancer/dvc.yaml:{s}" for s in ("validate", "register")]
    finally:
        params.write_text(original)
        run(["dvc", "repro"], pipeline_workspace)


def test_exp_run_with_one_models_param_reruns_from_its_train(pipeline_workspace: Path) -> None:
    out = run(
        [
            "dvc",
            "exp",
            "run",
            "--temp",
            "models/digits/dvc.yaml",
            "-S",
            f"models/digits/params.yaml:train.epochs={FAST_EPOCHS}",
            "-S",
            # a few epochs do not beat logistic regression: this experiment only asks not to
            # trail it by 10 points
            "models/digits/params.yaml:gates.min_gain_over_baselines.logistic_regression=-0.1",
        ],
        pipeline_workspace,
    ).stdout
    assert ran(out) == [f"models/digits/dvc.yaml:{s}" for s in STAGES[2:]], out
    shown = run(["dvc", "exp", "show", "--json"], pipeline_workspace).stdout
    epochs = [int(e) for e in re.findall(r'"epochs": (\d+)', shown)]
    assert FAST_EPOCHS in epochs and 40 in epochs  # the experiment and the workspace baseline


def test_metrics_plots_push_pull(pipeline_workspace: Path) -> None:
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], pipeline_workspace).stdout)
    text = json.dumps(shown)
    for model in MODELS:
        assert f"models/{model}/metrics/metrics.json" in text
    assert "logistic_regression" in text
    plots = run(["dvc", "plots", "show", "-o", "plots-html"], pipeline_workspace)
    assert plots.returncode == 0 and (pipeline_workspace / "plots-html/index.html").is_file()
    shutil.rmtree(pipeline_workspace / "plots-html")
    run(["dvc", "push"], pipeline_workspace)
    assert any((pipeline_workspace / ".dvcstore").rglob("*"))
    onnx = pipeline_workspace / "models/breast-cancer/model.onnx"
    onnx.unlink()
    shutil.rmtree(pipeline_workspace / ".dvc/cache")
    run(["dvc", "pull", "models/breast-cancer/dvc.yaml"], pipeline_workspace)
    assert onnx.stat().st_size > 1000
