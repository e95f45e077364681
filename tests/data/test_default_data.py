"""Expectations on the embedded default data set (scikit-learn's 8x8 digits)."""

from __future__ import annotations

import numpy as np

from ml.stages.prepare import load_digits_source


def test_shape_range_and_labels() -> None:
    X, y = load_digits_source()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert X.min() == 0 and X.max() == 16
    assert set(np.unique(y).tolist()) == set(range(10))


def test_classes_are_balanced_and_images_unique() -> None:
    X, y = load_digits_source()
    counts = np.bincount(y)
    assert counts.min() >= 170 and counts.max() <= 190
    assert len(np.unique(X, axis=0)) == len(X)
