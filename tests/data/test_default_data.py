"""Expectations on the bundled data sets the shipped models train on, against the input schema
and task each model declares: the declared ranges hold every value, labels are the classes."""

from __future__ import annotations

import numpy as np
import pytest

from ml.config import Params, load_params
from ml.stages.prepare import load_sklearn_source
from tests.conftest import REPO


def model(name: str) -> Params:
    return load_params(REPO / "models" / name / "params.yaml", REPO / "params.yaml")


@pytest.mark.parametrize(
    ("name", "rows", "features"), [("digits", 1797, 64), ("breast-cancer", 569, 30)]
)
def test_shape_declared_ranges_and_labels(name: str, rows: int, features: int) -> None:
    params = model(name)
    X, y = load_sklearn_source(params.data.source.split(":", 1)[1], params.input)
    assert X.shape == (rows, features) and X.dtype == np.float32
    low, high = params.input.bounds()
    assert (X >= low).all() and (X <= high).all()
    assert set(np.unique(y).tolist()) == set(range(params.task.num_classes))


def test_digits_use_the_whole_pixel_range_and_are_balanced() -> None:
    params = model("digits")
    X, y = load_sklearn_source("digits", params.input)
    assert X.min() == 0 and X.max() == 16
    counts = np.bincount(y)
    assert counts.min() >= 170 and counts.max() <= 190
    assert len(np.unique(X, axis=0)) == len(X)


def test_breast_cancer_is_imbalanced_as_declared_and_unique() -> None:
    params = model("breast-cancer")
    X, y = load_sklearn_source("breast_cancer", params.input)
    counts = np.bincount(y)
    assert counts.tolist() == [212, 357]  # malignant, benign: scikit-learn's order
    assert counts.min() / counts.sum() >= params.data.min_class_share
    assert len(np.unique(X, axis=0)) == len(X)
    # the declared ranges leave headroom (about 1.5x the largest value seen): live inputs a
    # little beyond the training data are plausible, not out of range
    assert (X.max(axis=0) <= params.input.bounds()[1] * 0.7).all()
