from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ml.config import ParamsError, load_params
from tests.conftest import REPO
from tests.unit.conftest import write_params


def test_repo_params_load() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "digits"
    assert params.gates.min_accuracy == 0.95
    assert params.gates.max_p99_latency_ms == 100.0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"train__epochs": "3"}, "train.epochs"),
        ({"train__epochs": 0}, "train.epochs"),
        ({"data__test_size": 1.5}, "data.test_size"),
        ({"train__device": "tpu"}, "train.device"),
        ({"gates__min_accuracy": 2}, "gates.min_accuracy"),
        ({"model__channels": []}, "model.channels"),
        ({"registry__model_name": "Bad Name"}, "registry.model_name"),
        ({"data__val_size": 0.5, "data__test_size": 0.45}, "data"),
    ],
)
def test_invalid_values_name_file_and_key(
    tmp_path: Path, overrides: dict[str, object], expected: str
) -> None:
    path = write_params(tmp_path, **overrides)
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["epoch"] = 3  # typo of epochs
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"train\.epoch: unknown key"):
        load_params(path)


def test_missing_section_is_named(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["gates"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="gates"):
        load_params(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [("train: [unclosed", "not valid YAML"), ("- a list", "top level must be a mapping")],
)
def test_malformed_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=message):
        load_params(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="cannot read params file"):
        load_params(tmp_path / "nope.yaml")


def test_cuda_index_device_is_accepted(tmp_path: Path) -> None:
    assert load_params(write_params(tmp_path, train__device="cuda:1")).train.device == "cuda:1"
