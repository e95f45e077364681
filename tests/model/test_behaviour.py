"""Behavioural checks on the exported model, as it will be served (onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.config import load_params
from ml.data import load_split
from ml.onnx_runtime import open_session

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def predict(pipeline_workspace: Path) -> object:
    session = open_session(pipeline_workspace / "models/model.onnx")
    return lambda X: session.run(None, {"input": X.astype(np.float32)})


def test_accuracy_above_the_release_gate(pipeline_workspace: Path, predict: object) -> None:
    test = load_split(pipeline_workspace / "data/prepared", "test")
    _, labels = predict(test.X)  # type: ignore[operator]
    accuracy = float(np.mean(labels == test.y))
    assert accuracy >= load_params(pipeline_workspace / "params.yaml").gates.min_accuracy
    assert accuracy >= 0.97


def test_small_noise_changes_few_predictions(pipeline_workspace: Path, predict: object) -> None:
    test = load_split(pipeline_workspace / "data/prepared", "test")
    rng = np.random.default_rng(0)
    noisy = np.clip(test.X + rng.normal(0, 0.5, test.X.shape), 0, 16)
    _, clean_labels = predict(test.X)  # type: ignore[operator]
    _, noisy_labels = predict(noisy)  # type: ignore[operator]
    assert np.mean(clean_labels == noisy_labels) >= 0.95


def test_every_class_is_recognised(pipeline_workspace: Path, predict: object) -> None:
    test = load_split(pipeline_workspace / "data/prepared", "test")
    _, labels = predict(test.X)  # type: ignore[operator]
    for c in range(10):
        assert np.mean(labels[test.y == c] == c) >= 0.85, f"class {c}"


def test_blank_image_is_not_confident(pipeline_workspace: Path, predict: object) -> None:
    probabilities, _ = predict(np.zeros((1, 64)))  # type: ignore[operator]
    assert probabilities.shape == (1, 10)
    assert np.isclose(probabilities.sum(), 1.0, atol=1e-5)
