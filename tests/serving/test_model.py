"""Loading a model: the serving contract is checked before anything is served."""

from __future__ import annotations

import json
import tempfile
import sys
from pathlib import Path

import numpy as np
import pytest

from ml.serving.model import ModelError, load_model
from ml.serving.registry import fetch_registered_model, parse_registry_uri

from .conftest import digits_rows, make_onnx, write_registration


def test_load_reads_the_registration_record(model_dir: Path) -> None:
    model = load_model(str(model_dir / "model.onnx"))
    assert (model.name, model.version, model.git_commit) == ("digits-classifier", "7", "commit-7")
    assert (model.features, model.num_classes) == (64, 10)
    # the input metric scales by the record's declared range [0, 16]
    rows = np.stack([np.zeros(64), np.full(64, 16.0), np.full(64, 4.0)]).astype(np.float32)
    assert model.input_summary(rows) == pytest.approx([0.0, 1.0, 0.25])
    probabilities, labels = model.predict(digits_rows(4))
    assert probabilities.shape == (4, 10) and probabilities.dtype == np.float32
    assert labels.dtype == np.int64 and labels.tolist() == probabilities.argmax(axis=1).tolist()
    meta = model.metadata()
    assert meta["metrics"]["accuracy"] == 0.97 and meta["served"]["source"].endswith("model.onnx")


def test_load_without_a_record_uses_the_file_hash_as_version(tmp_path: Path) -> None:
    path = make_onnx(tmp_path / "model.onnx", classes=3, features=16)
    model = load_model(str(path), name="tiny")
    assert model.name == "tiny" and model.version.startswith("sha256-")
    assert model.version[7:] == model.sha256[:12] and model.git_commit == "unknown"
    assert (model.features, model.num_classes) == (16, 3)
    rows = np.stack([np.full(16, 2.0), np.arange(16)]).astype(np.float32)
    assert model.input_summary(rows) == pytest.approx([2.0, 7.5])  # no schema: the plain mean


def test_the_input_metric_scales_each_feature_by_its_declared_range(tmp_path: Path) -> None:
    path = make_onnx(tmp_path / "model.onnx", features=3, classes=2)
    features = [
        {"name": "a", "range": [0, 1]},
        {"name": "b", "range": [-10, 10]},
        {"name": "c", "range": [100, 300]},
    ]
    schema = {"kind": "tabular", "features": features, "normalisation": "standardize"}
    write_registration(path, input=schema)
    model = load_model(str(path))
    rows = np.array([[0, -10, 100], [1, 10, 300], [0.5, 0, 200]], dtype=np.float32)
    assert model.input_summary(rows) == pytest.approx([0.0, 1.0, 0.5])
    assert model.input_summary_of_one(rows[2:]) == pytest.approx(0.5)
    assert model.metadata()["input"]["features"][1]["name"] == "b"


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        (
            {"kind": "image", "shape": [4, 4], "range": [0, 1], "normalisation": "none"},
            "declares 16",
        ),
        # the typed record refuses it before the model is opened, naming the field
        (
            {"kind": "image", "shape": [8, 8], "range": [1, 0], "normalisation": "none"},
            "not a registration record: input.*low < high",
        ),
    ],
)
def test_a_record_schema_the_model_cannot_take_is_refused(
    tmp_path: Path, schema: dict[str, object], fragment: str
) -> None:
    path = make_onnx(tmp_path / "model.onnx")
    write_registration(path, input=schema)
    with pytest.raises(ModelError, match=fragment):
        load_model(str(path))


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda p: p.write_bytes(b"not onnx at all"), "not a loadable ONNX model"),
        (lambda p: make_onnx(p, input_name="x"), "exactly one input named 'input'"),
        (lambda p: make_onnx(p, label_name="class"), "output 'label' is missing"),
        (lambda p: make_onnx(p, softmax=False), "not a probability distribution"),
        (lambda p: make_onnx(p, label_offset=3), "not the argmax"),
        (lambda p: make_onnx(p, fixed_batch=True), "fails on a sample batch"),
    ],
    ids=["garbage", "input-name", "output-name", "no-softmax", "label", "fixed-batch"],
)
def test_contract_violations_are_model_errors(tmp_path: Path, build: object, fragment: str) -> None:
    path = tmp_path / "model.onnx"
    build(path)  # type: ignore[operator]
    with pytest.raises(ModelError) as error:
        load_model(str(path))
    assert fragment in str(error.value) and str(path) in str(error.value)


def test_a_record_for_another_file_is_refused(model_dir: Path, tmp_path: Path) -> None:
    other = make_onnx(tmp_path / "other.onnx", seed=99)
    with pytest.raises(ModelError, match="differs from the registration record"):
        load_model(str(other), registration_path=str(model_dir / "registration.json"))


@pytest.mark.parametrize(
    "content",
    [
        "{",
        "[1]",
        '{"model_name": "digits-classifier", "note": "any JSON at all"}',
        "VALID_WITH_EXTRA_FIELD",
        "VALID_WITHOUT_SHA",
    ],
    ids=["malformed", "not-an-object", "arbitrary-json", "unknown-field", "missing-field"],
)
def test_a_record_outside_the_contract_is_refused(model_dir: Path, content: str) -> None:
    """The pipeline's own contract (ml.registration) decides what /metadata may show."""
    record = json.loads((model_dir / "registration.json").read_text())
    if content == "VALID_WITH_EXTRA_FIELD":
        content = json.dumps({**record, "secret": "shown unauthenticated"})
    elif content == "VALID_WITHOUT_SHA":
        content = json.dumps({k: v for k, v in record.items() if k != "onnx_sha256"})
    (model_dir / "registration.json").write_text(content)
    with pytest.raises(ModelError, match="not a registration record"):
        load_model(str(model_dir / "model.onnx"))


def test_a_named_record_must_exist_and_be_a_regular_file(model_dir: Path) -> None:
    with pytest.raises(ModelError, match="cannot read registration record: No such file"):
        load_model(str(model_dir / "model.onnx"), registration_path=str(model_dir / "nope.json"))
    with pytest.raises(ModelError, match="registration record is not a regular file"):
        load_model(str(model_dir / "model.onnx"), registration_path=str(model_dir))


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("models:/digits-classifier@champion", ("digits-classifier", "champion", None)),
        ("models:/digits-classifier/12", ("digits-classifier", None, "12")),
    ],
)
def test_registry_uris_parse(uri: str, expected: tuple[str, str | None, str | None]) -> None:
    assert parse_registry_uri(uri) == expected


@pytest.mark.parametrize(
    "uri", ["models:/x", "models:/x/latest", "models:/x@", "models:/x/1/2", "models:/@a"]
)
def test_bad_registry_uris(uri: str) -> None:
    with pytest.raises(ModelError, match="expected models:/<name>@<alias>"):
        parse_registry_uri(uri)


def test_registry_uris_resolve_through_mlflow(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Register an ONNX-flavour version (as the pipeline did before its pyfunc; the pyfunc's
    version is fetched in tests/unit/test_registry_promises.py) + alias, then serve."""
    import mlflow
    import onnx
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("serving", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_params({"seed": 42})
        mlflow.log_metric("accuracy", 0.93)
        mlflow.set_tag("mlflow.source.git.commit", "abc123")
        mlflow.onnx.log_model(
            onnx.load(str(model_dir / "model.onnx")),
            name="onnx-model",
            registered_model_name="digits-classifier",
            pip_requirements=["onnxruntime"],
        )
    MlflowClient().set_registered_model_alias("digits-classifier", "champion", "1")

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    by_alias = load_model("models:/digits-classifier@champion")
    by_version = load_model("models:/digits-classifier/1")
    assert list(scratch.iterdir()) == []  # downloads removed: reloads do not fill /tmp
    direct = load_model(str(model_dir / "model.onnx"))
    rows = digits_rows(5)
    for loaded in (by_alias, by_version):
        assert loaded.version == "1" and loaded.git_commit == "abc123"
        assert loaded.record["run_id"] == run.info.run_id
        assert loaded.record["metrics"] == {"accuracy": 0.93}
        np.testing.assert_array_equal(loaded.predict(rows)[0], direct.predict(rows)[0])
    assert by_alias.record["alias"] == "champion"
    assert by_alias.record["model_uri"] == "models:/digits-classifier/1"

    with pytest.raises(ModelError, match="registry lookup failed"):
        load_model("models:/digits-classifier@missing")
    path, record = fetch_registered_model("models:/digits-classifier/1")
    assert path.name == "model.onnx" and record["version"] == "1"


def test_a_registry_record_shipped_with_the_artifacts_wins(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("serving", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(model_dir), artifact_path="bundle")
    client = mlflow.MlflowClient()
    client.create_registered_model("digits-classifier")
    source = f"{run.info.artifact_uri}/bundle"
    client.create_model_version("digits-classifier", source, run_id=run.info.run_id)
    loaded = load_model("models:/digits-classifier/1")
    assert loaded.record["data_hash"] == "d" * 64  # from the shipped registration.json
    assert loaded.version == "1"  # ... but the registry's version is authoritative


def test_registry_uris_need_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ModelError, match="need the mlflow package"):
        load_model("models:/digits-classifier@champion")


def test_the_metadata_is_json_serialisable(model_dir: Path) -> None:
    json.dumps(load_model(str(model_dir / "model.onnx")).metadata())
