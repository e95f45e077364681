"""All six stages in-process, in a model's folder of a temporary repository, on fast params:
outputs, the MLflow run found by content, the registry version reused for the same model, the
record split between git and the machine, and byte-for-byte reproducible outputs."""

from __future__ import annotations

import hashlib
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
from ml.networks import build_network
from ml.registration import MACHINE_LOCAL, local_record_path, read_best_record, read_record
from ml.stages import evaluate, export, prepare, register, train, validate
from ml.tracking import CHECKPOINT_TAG, start_tracking, tracking_uri
from scripts import seed_sweep
from tests.conftest import FAST_EPOCHS
from tests.unit.conftest import (
    COMMON,
    FAST_SHARED,
    catalog_args,
    model_workspace,
    write_params,
    write_shared,
)

PREPARE = [*COMMON, "--out", "data/prepared"]
VALIDATE = [*COMMON, "--data", "data/prepared", "--report", "reports/validation.json"]
TRAIN = [*COMMON, "--data", "data/prepared", "--model", "model.pt"]
TRAIN += ["--history", "reports/plots/train_history.csv"]
EVALUATE = [*COMMON, "--data", "data/prepared", "--model", "model.pt"]
EVALUATE += ["--metrics", "metrics/metrics.json", "--plots", "reports/plots"]
EVALUATE += ["--figures", "reports/figures"]
EXPORT = [*COMMON, "--data", "data/prepared", "--model", "model.pt"]
EXPORT += ["--metrics", "metrics/metrics.json", "--onnx", "model.onnx", "--card", "model_card.md"]
REGISTER = [*COMMON, "--onnx", "model.onnx", "--model", "model.pt"]
REGISTER += ["--metrics", "metrics/metrics.json", "--data", "data/prepared"]
REGISTER += ["--out", "registration.json"]
# a few epochs do not beat logistic regression: fast chains only ask not to trail it by 10 points
LENIENT = {"gates__min_gain_over_baselines__logistic_regression": -0.1}
FAST = {
    "digits": {"train__epochs": FAST_EPOCHS, **LENIENT},
    "breast-cancer": {"train__epochs": 30, **LENIENT},
}


def run_chain(model: str) -> None:
    """The six stages of `model`, in the cwd (its folder)."""
    assert prepare.main(PREPARE) == 0
    assert validate.main(VALIDATE) == 0
    assert train.main([*TRAIN, *catalog_args(model)]) == 0
    assert evaluate.main([*EVALUATE, *catalog_args(model)]) == 0
    assert export.main([*EXPORT, "--name", model]) == 0
    assert register.main([*REGISTER, *catalog_args(model)]) == 0


@pytest.fixture(scope="module")
def chain_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both models' stages run once per module in one temporary repository; each test gets its
    own copy of the repository (tests may mutate it)."""
    root = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for model, overrides in FAST.items():
            folder = model_workspace(root, model, FAST_SHARED, **overrides)
            patch.chdir(folder)
            run_chain(model)
    return root


@pytest.fixture
def repo(chain_once: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(chain_once, copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return copy


@pytest.fixture
def chain(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The digits folder of the copy, as the cwd."""
    folder = repo / "models" / "digits"
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def cancer(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = repo / "models" / "breast-cancer"
    monkeypatch.chdir(folder)
    return folder


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_chain_outputs_run_and_registry(chain: Path) -> None:
    for name in (
        "model.pt",
        "model.onnx",
        "model_card.md",
        "reports/plots/train_history.csv",
        "reports/plots/confusion.csv",
        "reports/plots/per_class.csv",
        "reports/plots/roc.csv",
        "reports/plots/pr.csv",
        "reports/plots/thresholds.csv",
        "reports/figures/confusion_matrix.png",
        "reports/figures/per_class.png",
        "reports/figures/roc_pr.png",
        "reports/figures/thresholds.png",
    ):
        assert (chain / name).stat().st_size > 0, name
    metrics = json.loads((chain / "metrics/metrics.json").read_text())
    assert metrics["accuracy"] > 0.9 and set(metrics["per_class_f1"]) == {str(c) for c in range(10)}
    assert set(metrics["baselines"]) == {"majority", "logistic_regression"}
    assert metrics["baselines"]["majority"]["accuracy"] < 0.2
    assert "Intended use" in (chain / "model_card.md").read_text()

    local = read_record(local_record_path(chain / "registration.json"))
    assert local.model_uri == f"models:/digits-classifier/{local.version}"
    assert local.latency is not None and 0 < local.latency.p50_ms <= local.latency.p99_ms < 100
    root = chain.parents[1]
    assert tracking_uri(root).startswith("sqlite:///") and (root / "mlflow.db").is_file()
    assert not (chain / "mlruns").exists()  # artifacts go to the store's mlartifacts/
    start_tracking("digits-classifier", root)
    client = MlflowClient()
    run = client.get_run(str(local.run_id))
    assert run.data.params["train.epochs"] == str(FAST_EPOCHS)
    assert run.data.tags[CHECKPOINT_TAG] == digest(chain / "model.pt")
    # evaluate found the training run by the checkpoint's content and logged into it
    assert "test_accuracy" in run.data.metrics and "baseline_majority_accuracy" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) >= 1
    version = client.get_model_version_by_alias("digits-classifier", "candidate")
    assert str(version.version) == local.version
    assert version.tags["onnx_sha256"] == local.onnx_sha256 == digest(chain / "model.onnx")


def test_the_tracked_record_holds_no_machine_local_fact(chain: Path) -> None:
    tracked = json.loads((chain / "registration.json").read_text())
    assert not set(MACHINE_LOCAL) & set(tracked)
    record = read_record(chain / "registration.json")
    assert record.catalog_name == "digits" and record.app == "digits-classifier"
    assert record.input.feature_count == 64 and record.task.num_classes == 10
    assert {g.gate for g in record.gates} == {
        "min_accuracy",
        "min_roc_auc",
        "gain_over_majority",
        "gain_over_logistic_regression",
    }
    best = read_best_record(chain / "registration.json")
    assert best.version is not None and best.tracked() == record


def test_registering_the_same_model_again_reuses_its_version(chain: Path) -> None:
    tracked = (chain / "registration.json").read_text()
    before = read_record(local_record_path(chain / "registration.json"))
    assert register.main([*REGISTER, *catalog_args("digits")]) == 0
    after = read_record(local_record_path(chain / "registration.json"))
    assert after.version == before.version
    assert (chain / "registration.json").read_text() == tracked  # byte for byte
    client = MlflowClient(tracking_uri(chain.parents[1]))
    assert len(client.search_model_versions("name='digits-classifier'")) == 1


def test_a_rerun_writes_every_output_byte_for_byte_again(chain: Path) -> None:
    """What makes a fresh clone's `make run` leave git (and dvc.lock) untouched."""
    outputs = [
        "data/prepared/train.npz",
        "data/prepared/meta.json",
        "reports/validation.json",
        "model.pt",
        "reports/plots/train_history.csv",
        "metrics/metrics.json",
        "reports/plots/roc.csv",
        "reports/figures/roc_pr.png",
        "model.onnx",
        "model_card.md",
        "registration.json",
    ]
    before = {name: digest(chain / name) for name in outputs}
    run_chain("digits")
    assert {name: digest(chain / name) for name in outputs} == before


def test_the_binary_tabular_model_runs_the_same_stages(cancer: Path) -> None:
    metrics = json.loads((cancer / "metrics/metrics.json").read_text())
    for key in ("precision", "recall", "f1", "average_precision", "roc_auc"):
        assert 0.5 < metrics[key] <= 1.0, key
    assert set(metrics["per_class_f1"]) == {"malignant", "benign"}
    roc = (cancer / "reports/plots/roc.csv").read_text().splitlines()
    assert roc[0] == "fpr,tpr" and roc[-1] == "1.00000,1.00000"
    thresholds = (cancer / "reports/plots/thresholds.csv").read_text().splitlines()
    assert thresholds[0] == "threshold,precision,recall,f1,coverage" and len(thresholds) == 20
    card = (cancer / "model_card.md").read_text()
    assert "positive class `malignant`" in card and "| mean radius | 0 | 45 |" in card
    record = read_record(cancer / "registration.json")
    assert record.task.type == "binary" and record.input.kind == "tabular"
    model = onnx.load(str(cancer / "model.onnx"))
    width = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    assert width == 30


def test_standardisation_lives_in_the_exported_graph(cancer: Path) -> None:
    """Clients send raw measurements: the network standardises them with train-split stats."""
    network = load_checkpoint(cancer / "model.pt")
    train_split = load_split(cancer / "data/prepared", "train")
    shift = network.get_submodule("normalise").shift.numpy()
    np.testing.assert_allclose(shift, train_split.X.mean(axis=0), rtol=1e-4)


def test_failing_gate_keeps_alias_and_files(
    chain: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (chain / "registration.json").read_text()
    version = read_record(local_record_path(chain / "registration.json")).version
    write_params(chain, **FAST["digits"], gates__min_accuracy=0.9999)
    assert register.main([*REGISTER, *catalog_args("digits")]) == 1
    out = capsys.readouterr()
    assert "min_accuracy" in out.out and "FAIL" in out.out and "gate(s) failed" in out.err
    assert (chain / "registration.json").read_text() == before
    client = MlflowClient(tracking_uri(chain.parents[1]))
    alias = client.get_model_version_by_alias("digits-classifier", "candidate")
    assert str(alias.version) == version
    assert len(client.search_model_versions("name='digits-classifier'")) == 1


def test_a_model_that_loses_to_its_baseline_is_not_registered(
    cancer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    strict = {**FAST["breast-cancer"], "gates__min_gain_over_baselines__logistic_regression": 0.0}
    write_params(cancer, "breast-cancer", **strict)
    metrics = json.loads((cancer / "metrics/metrics.json").read_text())
    metrics["baselines"]["logistic_regression"]["accuracy"] = metrics["accuracy"] + 0.01
    (cancer / "metrics/metrics.json").write_text(json.dumps(metrics))
    assert register.main([*REGISTER, *catalog_args("breast-cancer")]) == 1
    out = capsys.readouterr().out
    assert "gain_over_logistic_regression" in out and "FAIL" in out


def test_seed_sweep_scores_a_seed_as_the_pipeline_does(chain: Path) -> None:
    """`make seed-sweep` promises the pipeline's numbers: same split, training and prediction."""
    out = chain / "sweep.json"
    argv = ["--catalog", "../../models.yaml", "--model", "digits", "--seeds", "42"]
    assert seed_sweep.main([*argv, "--out", str(out)]) == 0
    (swept,) = json.loads(out.read_text())["seeds"]
    metrics = json.loads((chain / "metrics/metrics.json").read_text())
    assert swept["test_accuracy"] == metrics["accuracy"]
    assert swept["logistic_regression"] == metrics["baselines"]["logistic_regression"]["accuracy"]
    history = (chain / "reports/plots/train_history.csv").read_text().strip().splitlines()
    assert swept["epochs_run"] == len(history) - 1  # header + one line per epoch


def test_onnx_matches_contract(chain: Path) -> None:
    model = onnx.load(str(chain / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["probabilities", "label"]
    params = load_params("params.yaml", "../../params.yaml")
    assert model.opset_import[0].version == params.export.opset


def test_parity_failure_fails_export_and_keeps_previous_onnx(
    chain: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    previous = (chain / "model.onnx").read_bytes()
    real_export = export.export_onnx
    params = load_params("params.yaml", "../../params.yaml")

    def export_untrained(network: object, path: Path, opset: int, features: int) -> None:
        torch.manual_seed(123)
        other = build_network(params.model, params.input, 10)
        real_export(other, path, opset, features)  # a different network: labels will not match

    monkeypatch.setattr(export, "export_onnx", export_untrained)
    assert export.main([*EXPORT, "--name", "digits"]) == 1
    assert "does not match the trained model" in capsys.readouterr().err
    assert (chain / "model.onnx").read_bytes() == previous
    assert not list(chain.glob(".model.onnx.*"))


def test_check_parity_tolerance(chain: Path) -> None:
    network = load_checkpoint(chain / "model.pt")
    test = load_split(chain / "data/prepared", "test")
    assert export.check_parity(network, chain / "model.onnx", test, 1e-4) < 1e-4
    with pytest.raises(StageError, match="max probability difference"):
        export.check_parity(network, chain / "model.onnx", test, 1e-12)


def test_early_stopping_stops_before_the_epoch_budget(workdir: Path) -> None:
    write_params(workdir, train__epochs=200, train__patience=1, train__learning_rate=0.5)
    assert prepare.main(PREPARE) == 0
    assert train.main([*TRAIN, *catalog_args()]) == 0
    history = (workdir / "reports/plots/train_history.csv").read_text().strip().splitlines()
    assert len(history) - 1 < 200


def test_a_cnn_too_deep_for_its_image_is_a_clear_error(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_params(workdir, train__epochs=1, model__channels=[4, 4, 4], input__shape=[4, 16])
    assert prepare.main([*COMMON, "--out", "data/prepared"]) == 0
    assert train.main([*TRAIN, *catalog_args()]) == 1
    assert "shrink a 4x16 image to nothing" in capsys.readouterr().err


def test_missing_checkpoint_is_clear(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert prepare.main(PREPARE) == 0
    assert evaluate.main([*EVALUATE, *catalog_args()]) == 1
    assert "checkpoint missing" in capsys.readouterr().err
    Path("model.pt").write_bytes(b"junk")
    assert export.main([*EXPORT, "--name", "digits"]) == 1
    assert "unreadable checkpoint" in capsys.readouterr().err


def test_an_unknown_model_name_is_clear(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert prepare.main(PREPARE) == 0
    assert train.main([*TRAIN, *catalog_args("nope")]) == 1
    assert "no model 'nope'" in capsys.readouterr().err


def test_git_commit_outside_git(workdir: Path) -> None:
    assert register.git_commit() == "unknown"


def test_gate_table_lists_each_gate(tmp_path: Path) -> None:
    shared = write_shared(tmp_path)
    gates = load_params(write_params(tmp_path / "m"), shared).gates
    metrics = {
        "accuracy": 0.5,
        "roc_auc": 0.9,
        "baselines": {"majority": {"accuracy": 0.1}, "logistic_regression": {"accuracy": 0.6}},
    }
    results = register.content_gates(gates, metrics)
    assert [(r.gate, r.passed) for r in results] == [
        ("min_accuracy", False),
        ("min_roc_auc", False),
        ("gain_over_logistic_regression", False),
        ("gain_over_majority", False),
    ]
    assert np.isclose(results[2].measured, -0.1)
    table = register.gate_table(results)
    assert "gain_over_majority" in table and table.count("FAIL") == 4
    tie = {**metrics, "accuracy": 0.6, "roc_auc": 0.999}
    tie["baselines"] = {"majority": {"accuracy": 0.1}, "logistic_regression": {"accuracy": 0.6}}
    assert register.content_gates(gates, tie)[2].passed  # as accurate as it: not worse
