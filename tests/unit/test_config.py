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
    with pytest.raises(ParamsError, match=rf"{shared}:\d+: export.opset"):
        load_params(own, shared)


def test_a_key_in_both_files_is_refused_naming_both(tmp_path: Path) -> None:
    own = write_params(tmp_path / "own", gates__max_p99_latency_ms=50.0)
    with pytest.raises(ParamsError) as error:
        load_params(own, SHARED)
    assert f"{own}: gates.max_p99_latency_ms is also set in {SHARED}" in str(error.value)


def test_without_the_shared_file_its_keys_are_missing(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="export: missing"):
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


# -- issue 18: the stages read params in DVC's YAML dialect, and errors point at the line ---------


def _edit(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return path


def _line(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("learning_rate: 3e-3", 0.003),  # YAML 1.1 (PyYAML): the string '3e-3'
        ("learning_rate: 1E-2", 0.01),
        ("amp: yes", "yes"),  # YAML 1.1: True
        ("amp: on", "on"),
        ("patience: 017", 17),  # YAML 1.1: octal 15
        ("schedule: 1:30", "1:30"),  # YAML 1.1: sexagesimal 90
        ("seed: 0o17", 15),
    ],
)
def test_params_are_read_in_the_dialect_dvc_records(text: str, expected: object) -> None:
    """What the stage reads is what `dvc params diff` and dvc.lock show, for every value where
    YAML 1.1 and 1.2 disagree; DVC's own parser is the reference."""
    from dvc.utils.serialize import parse_yaml

    from ml.yaml_dialect import parse

    key = text.split(":")[0]
    assert parse_yaml(text, "params.yaml")[key] == expected
    assert parse(text)[key] == expected


def test_a_learning_rate_in_e_notation_is_the_float_dvc_reads(tmp_path: Path) -> None:
    path = _edit(write_params(tmp_path), "learning_rate: 0.003", "learning_rate: 3e-3")
    assert load_params(path, SHARED).train.learning_rate == 0.003


def test_a_yaml_11_boolean_is_refused_as_dvc_reads_it(tmp_path: Path) -> None:
    """DVC records `amp: yes` as the string 'yes'; the stage must not quietly read True."""
    path = _edit(write_params(tmp_path), "amp: true", "amp: yes")
    with pytest.raises(ParamsError, match=r"train\.amp: .*got 'yes'"):
        load_params(path, SHARED)


def test_a_repeated_key_is_refused_with_its_line(tmp_path: Path) -> None:
    path = _edit(write_params(tmp_path), "  epochs: 40\n", "  epochs: 40\n  epochs: 4\n")
    with pytest.raises(ParamsError, match=rf"{path}: not valid YAML: line \d+.*duplicate key"):
        load_params(path, SHARED)


@pytest.mark.parametrize(
    ("old", "new", "key", "hint"),
    [
        ("  test_size: 0.2", "  test_szie: 0.2", "data.test_szie", "test_size"),
        ("seed: 42", "seeed: 42", "seeed", "seed"),
    ],
)
def test_a_misspelt_key_names_file_line_and_the_key_meant(
    tmp_path: Path, old: str, new: str, key: str, hint: str
) -> None:
    path = _edit(write_params(tmp_path), old, new)
    with pytest.raises(ParamsError) as error:
        load_params(path, SHARED)
    line = _line(path, new.strip())
    assert f"{path}:{line}: {key}: unknown key (did you mean {hint}?)" in str(error.value)


def test_an_out_of_range_value_names_its_line(tmp_path: Path) -> None:
    path = _edit(write_params(tmp_path), "epochs: 40", "epochs: 0")
    with pytest.raises(ParamsError) as error:
        load_params(path, SHARED)
    assert f"{path}:{_line(path, 'epochs: 0')}: train.epochs:" in str(error.value)
