"""Fixtures of the monitoring tier: a small served model (the serving tier's ONNX builder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.serving.model import LoadedModel, load_model
from tests.serving.conftest import make_onnx, write_registration


@pytest.fixture
def model(tmp_path: Path) -> LoadedModel:
    """A linear softmax model honouring the serving contract, registered as version 7."""
    path = make_onnx(tmp_path / "v7" / "model.onnx", seed=7)
    write_registration(path, version="7")
    return load_model(str(path))
