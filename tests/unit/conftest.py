"""Unit-tier helpers: a model's folder inside a temporary repository (models.yaml, the shared
root params.yaml, models/<name>/params.yaml), with small, fast settings."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import FAST_EPOCHS, REPO

# what every stage of a model gets on its command line (DVC runs it in the model's folder)
COMMON = ["--params", "params.yaml", "--shared-params", "../../params.yaml"]


def catalog_args(model: str = "digits") -> list[str]:
    return ["--catalog", "../../models.yaml", "--name", model]


def _write(source: Path, target: Path, overrides: dict[str, Any]) -> Path:
    """Copy a params file, apply dotted overrides (train__epochs=2), write it to `target`."""
    params = yaml.safe_load(source.read_text())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split("__")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(params, sort_keys=False))
    return target


def write_params(directory: Path, model: str = "digits", **overrides: Any) -> Path:
    """The model's own params.yaml, with overrides, as `directory`/params.yaml."""
    return _write(REPO / "models" / model / "params.yaml", directory / "params.yaml", overrides)


def write_shared(root: Path, **overrides: Any) -> Path:
    """The repository's shared params.yaml, with overrides, as `root`/params.yaml."""
    return _write(REPO / "params.yaml", root / "params.yaml", overrides)


def model_workspace(
    root: Path, model: str = "digits", shared: dict[str, Any] | None = None, **overrides: Any
) -> Path:
    """A repository at `root` holding models.yaml, the shared params and one model's folder;
    returns that folder (where DVC would run the model's stages)."""
    shutil.copy(REPO / "models.yaml", root / "models.yaml")
    write_shared(root, **(shared or {}))
    folder = root / "models" / model
    write_params(folder, model, **overrides)
    return folder


FAST_SHARED = {"gates__latency_samples": 200, "gates__latency_warmup": 10}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The digits folder of a temp repository with fast params, as the cwd; MLflow lands in the
    repository's own SQLite file."""
    folder = model_workspace(tmp_path, "digits", FAST_SHARED, train__epochs=FAST_EPOCHS)
    monkeypatch.chdir(folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return folder
