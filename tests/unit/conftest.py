"""Unit-tier helpers: a params.yaml with small, fast settings written into a temp directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import FAST_EPOCHS, REPO


def write_params(directory: Path, **overrides: Any) -> Path:
    """Copy the repo's params.yaml, apply dotted overrides (e.g. train__epochs=2), write it."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split("__")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp cwd with fast params; MLflow lands in its own SQLite file there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_params(
        tmp_path, train__epochs=FAST_EPOCHS, export__latency_samples=200, export__warmup=10
    )
    return tmp_path
