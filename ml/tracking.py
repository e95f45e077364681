"""MLflow wiring. Nothing happens at import: stages call `start_tracking` when they need it.

Default store: a SQLite file in the working directory (the repo root under dvc) with artifacts in
./mlartifacts; MLFLOW_TRACKING_URI points everything at a server instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

EXPERIMENT = "digits-classifier"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def start_tracking(experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(tracking_uri())
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        location = (Path.cwd() / "mlartifacts").as_uri()
    return str(mlflow.create_experiment(experiment, artifact_location=location))


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"epochs": 3}} -> {"train.epochs": 3}: MLflow params are flat."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
