"""Params: each model's own file merged over the shared root file, validated once; every error
names the file and the key it comes from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ml.config import ParamsError, load_params
from ml.schema import ImageInput, TabularInput
from tests.conftest import REPO
from tests.unit.conftest import write_params, write_shared

SHARED = REPO / "params.yaml"


@pytest.mark.parametrize("model", ["digits", "breast-cancer"])
def test_repo_params_load(model: str) -> None:
    params = load_params(REPO / "models" / model / "params.yaml", SHARED)
    assert params.gates.max_p99_latency_ms == 100.0  # shared
    assert params.gates.min_accuracy == 0.95  # the model's own
    assert params.registry.alias == "candidate"


def test_the_two_shipped_models_differ_in_kind_and_task() -> None:
    digits = load_params(REPO / "models/digits/params.yaml", SHARED)
    cancer = load_params(REPO / "models/breast-cancer/params.yaml", SHARED)
    assert isinstance(digits.input, ImageInput) and digits.input.feature_count == 64
    assert digits.task.type == "multiclass" and digits.task.num_classes == 10
    assert isinstance(cancer.input, TabularInput) and cancer.input.feature_count == 30
    assert cancer.task.type == "binary" and cancer.task.positive_index == 0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"train__epochs": "3"}, "train.epochs"),
        ({"train__epochs": 0}, "train.epochs"),
        ({"data__test_size": 1.5}, "data.test_size"),
        ({"train__device": "tpu"}, "train.device"),
        ({"gates__min_accuracy": 2}, "gates.min_accuracy"),
        ({"model__channels": []}, "model.channels"),
        ({"model__family": "transformer"}, "model"),
        ({"input__shape": [8]}, "input.shape"),
        ({"input__range": [16, 0]}, "input"),
        ({"task__classes": ["a", "b"]}, "task"),
        ({"gates__min_gain_over_baselines": {"majority": 0.1}}, "min_gain_over_baselines"),
        ({"data__val_size": 0.5, "data__test_size": 0.45}, "data"),
    ],
)
def test_invalid_values_name_file_and_key(
    tmp_path: Path, overrides: dict[str, object], expected: str
) -> None:
    path = write_params(tmp_path, **overrides)
    with pytest.raises(ParamsError) as error:
        load_params(path, SHARED)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_an_invalid_shared_value_names_the_shared_file(tmp_path: Path) -> None:
    shared = write_shared(tmp_path, export__opset=5)
    own = write_params(tmp_path / "models" / "digits")
    with pytest.raises(ParamsError, match=rf"{shared}: export.opset"):
        load_params(own, shared)


def test_a_key_in_both_files_is_refused_naming_both(tmp_path: Path) -> None:
    own = write_params(tmp_path / "own", gates__max_p99_latency_ms=50.0)
    with pytest.raises(ParamsError) as error:
        load_params(own, SHARED)
    assert f"{own}: gates.max_p99_latency_ms is also set in {SHARED}" in str(error.value)


def test_without_the_shared_file_its_keys_are_missing(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="export: Field required"):
        load_params(write_params(tmp_path))


def test_a_cnn_needs_an_image(tmp_path: Path) -> None:
    path = write_params(
        tmp_path, "breast-cancer", model__family="cnn", model__channels=[8], model__hidden=8
    )
    with pytest.raises(ParamsError, match="cnn needs input.kind image"):
        load_params(path, SHARED)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"type": "binary", "classes": ["a", "b", "c"]}, "a binary task has 2 classes"),
        ({"type": "binary", "classes": ["a", "b"]}, "names its positive_class"),
        ({"type": "binary", "classes": ["a", "b"], "positive_class": "z"}, "'z' is not one"),
        ({"type": "multiclass", "classes": ["a", "a", "b"]}, "classes must be unique"),
    ],
)
def test_task_consistency(tmp_path: Path, task: dict[str, object], message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        load_params(write_params(tmp_path, task=task), SHARED)


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "models/digits/params.yaml").read_text())
    raw["train"]["epoch"] = 3  # typo of epochs
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"train\.epoch: unknown key"):
        load_params(path, SHARED)


def test_missing_section_is_named(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "models/digits/params.yaml").read_text())
    del raw["card"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="card"):
        load_params(path, SHARED)


@pytest.mark.parametrize(
    ("text", "message"),
    [("train: [unclosed", "not valid YAML"), ("- a list", "top level must be a mapping")],
)
def test_malformed_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=message):
        load_params(path, SHARED)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="cannot read params file"):
        load_params(tmp_path / "nope.yaml", SHARED)


def test_cuda_index_device_is_accepted(tmp_path: Path) -> None:
    params = load_params(write_params(tmp_path, train__device="cuda:1"), SHARED)
    assert params.train.device == "cuda:1"
