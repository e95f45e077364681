"""All six stages in-process on fast params: outputs, MLflow run, registry version and alias."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from mlflow import MlflowClient

from ml.checkpoint import load_checkpoint
from ml.cli import StageError
from ml.config import load_params
from ml.data import load_split
from ml.stages import evaluate, export, prepare, register, train, validate
from ml.tracking import start_tracking, tracking_uri
from scripts import seed_sweep
from tests.conftest import FAST_EPOCHS
from tests.unit.conftest import write_params

TRAIN = ["--data", "prepared", "--model", "models/model.pt", "--run-info", "models/run.json"]
TRAIN += ["--history", "plots/history.csv"]
EVALUATE = ["--data", "prepared", "--model", "models/model.pt", "--run-info", "models/run.json"]
EVALUATE += ["--metrics", "metrics/metrics.json", "--plots", "plots", "--figures", "figures"]
EXPORT = ["--data", "prepared", "--model", "models/model.pt", "--metrics", "metrics/metrics.json"]
EXPORT += ["--onnx", "models/model.onnx", "--latency", "metrics/latency.json"]
EXPORT += ["--card", "models/model_card.md"]
REGISTER = ["--onnx", "models/model.onnx", "--metrics", "metrics/metrics.json"]
REGISTER += ["--latency", "metrics/latency.json", "--run-info", "models/run.json"]
REGISTER += ["--data-meta", "prepared/meta.json", "--out", "models/registration.json"]


@pytest.fixture(scope="module")
def chain_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six stages run once per module; each test gets its own copy (tests may mutate it)."""
    workdir = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        write_params(
            workdir, train__epochs=FAST_EPOCHS, export__latency_samples=200, export__warmup=10
        )
        assert prepare.main(["--out", "prepared"]) == 0
        assert validate.main(["--data", "prepared", "--report", "reports/validation.json"]) == 0
        assert train.main(TRAIN) == 0
        assert evaluate.main(EVALUATE) == 0
        assert export.main(EXPORT) == 0
        assert register.main(REGISTER) == 0
    return workdir


@pytest.fixture
def chain(chain_once: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "chain"
    shutil.copytree(chain_once, copy)
    monkeypatch.chdir(copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return copy


def test_chain_outputs_run_and_registry(chain: Path) -> None:
    for name in (
        "models/model.pt",
        "models/model.onnx",
        "models/model_card.md",
        "plots/history.csv",
        "plots/confusion.csv",
        "plots/per_class.csv",
        "plots/roc.csv",
        "plots/pr.csv",
        "figures/confusion_matrix.png",
        "figures/per_class.png",
        "figures/roc_pr.png",
    ):
        assert (chain / name).stat().st_size > 0, name
    metrics = json.loads((chain / "metrics/metrics.json").read_text())
    assert metrics["accuracy"] > 0.9 and set(metrics["per_class_f1"]) == {str(c) for c in range(10)}
    latency = json.loads((chain / "metrics/latency.json").read_text())
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] < 100
    assert "Intended use" in (chain / "models/model_card.md").read_text()

    record = json.loads((chain / "models/registration.json").read_text())
    assert record["model_uri"] == f"models:/digits-classifier/{record['version']}"
    assert tracking_uri().startswith("sqlite:///") and (chain / "mlflow.db").is_file()
    client = MlflowClient()
    run = client.get_run(record["run_id"])
    assert run.data.params["train.epochs"] == str(FAST_EPOCHS)
    assert (
        "test_accuracy" in run.data.metrics
        and len(client.get_metric_history(run.info.run_id, "val_loss")) >= 1
    )
    version = client.get_model_version_by_alias("digits-classifier", "candidate")
    assert str(version.version) == record["version"]
    assert version.tags["data_hash"] == record["data_hash"] and "git_commit" in version.tags


def test_seed_sweep_scores_a_seed_as_the_pipeline_does(chain: Path) -> None:
    """`make seed-sweep` promises the pipeline's numbers: same split, training and prediction."""
    out = chain / "sweep.json"
    assert seed_sweep.main(["--params", "params.yaml", "--seeds", "42", "--out", str(out)]) == 0
    (swept,) = json.loads(out.read_text())["seeds"]
    assert load_params("params.yaml").seed == 42
    assert (
        swept["test_accuracy"]
        == json.loads((chain / "metrics/metrics.json").read_text())["accuracy"]
    )
    history = (chain / "plots/history.csv").read_text().strip().splitlines()
    assert swept["epochs_run"] == len(history) - 1  # header + one line per epoch


def test_failing_gate_keeps_alias_and_files(
    chain: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (chain / "models/registration.json").read_text()
    write_params(
        chain,
        train__epochs=FAST_EPOCHS,
        export__latency_samples=200,
        export__warmup=10,
        gates__min_accuracy=0.9999,
    )
    assert register.main(REGISTER) == 1
    out = capsys.readouterr()
    assert "min_accuracy" in out.out and "FAIL" in out.out and "gate(s) failed" in out.err
    assert (chain / "models/registration.json").read_text() == before
    start_tracking()
    client = MlflowClient()
    alias = client.get_model_version_by_alias("digits-classifier", "candidate")
    assert str(alias.version) == json.loads(before)["version"]
    assert len(client.search_model_versions("name='digits-classifier'")) == 1


def test_onnx_matches_contract(chain: Path) -> None:
    model = onnx.load(str(chain / "models/model.onnx"))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["probabilities", "label"]
    assert model.opset_import[0].version == load_params("params.yaml").export.opset


def test_parity_failure_fails_export_and_keeps_previous_onnx(
    chain: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    previous = (chain / "models/model.onnx").read_bytes()
    trained = load_checkpoint(chain / "models/model.pt")
    real_export = export.export_onnx

    def export_untrained(model: object, path: Path, opset: int) -> None:
        torch.manual_seed(123)
        other = type(trained)(load_params("params.yaml").model, 10, 16.0)
        real_export(other, path, opset)  # a different network: labels will not match

    monkeypatch.setattr(export, "export_onnx", export_untrained)
    assert export.main(EXPORT) == 1
    assert "does not match the trained model" in capsys.readouterr().err
    assert (chain / "models/model.onnx").read_bytes() == previous
    assert not list((chain / "models").glob(".model.onnx.*"))


def test_check_parity_tolerance(chain: Path) -> None:
    model = load_checkpoint(chain / "models/model.pt")
    test = load_split(chain / "prepared", "test")
    assert (
        export.check_parity(model, chain / "models/model.onnx", test, 1e-4)["max_abs_diff"] < 1e-4
    )
    with pytest.raises(StageError, match="max probability difference"):
        export.check_parity(model, chain / "models/model.onnx", test, 1e-12)


def test_training_is_deterministic(chain: Path) -> None:
    first = torch.load(chain / "models/model.pt", weights_only=True)["state_dict"]
    assert train.main(TRAIN) == 0
    second = torch.load(chain / "models/model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_early_stopping_stops_before_the_epoch_budget(workdir: Path) -> None:
    write_params(workdir, train__epochs=200, train__patience=1, train__learning_rate=0.5)
    assert prepare.main(["--out", "prepared"]) == 0
    assert train.main(TRAIN) == 0
    assert json.loads((workdir / "models/run.json").read_text())["epochs_run"] < 200


def test_missing_checkpoint_is_clear(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert prepare.main(["--out", "prepared"]) == 0
    assert evaluate.main(EVALUATE) == 1
    assert "checkpoint missing" in capsys.readouterr().err
    Path("models").mkdir()
    Path("models/model.pt").write_bytes(b"junk")
    assert export.main(EXPORT) == 1
    assert "unreadable checkpoint" in capsys.readouterr().err


def test_git_commit_outside_git(workdir: Path) -> None:
    assert register.git_commit() == "unknown"


def test_gate_table_lists_each_gate() -> None:
    gates = load_params(Path(__file__).resolve().parents[2] / "params.yaml").gates
    results = register.check_gates(gates, {"accuracy": 0.5}, {"p99_ms": 250.0})
    assert [r.passed for r in results] == [False, False]
    table = register.gate_table(results)
    assert "min_accuracy" in table and "max_p99_latency_ms" in table and table.count("FAIL") == 2
    assert np.isclose(results[1].measured, 250.0)
