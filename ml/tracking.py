"""MLflow wiring. Nothing happens at import: stages call `start_tracking` when they need it.

Default store: one SQLite file at the repository root (`mlflow.db`, artifacts in `mlartifacts/`,
both git-ignored), shared by every model, whose stages run in their own folders;
MLFLOW_TRACKING_URI points everything at a server instead. Each model logs to its own experiment
(models.yaml `experiment`).

Stages find their training run by content, not by an id written into a git-tracked file: train
tags the run with the checkpoint's sha256, and evaluate/register look the run up by that tag.
A run id is a fact of one machine's store; a fresh clone re-running the pipeline writes the
same tracked files and never shows a diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHECKPOINT_TAG = "mlops.checkpoint_sha256"
MODEL_TAG = "mlops.model"


def local_store_uri(root: Path | None = None) -> str:
    """The repository's own SQLite store (`root`, default the working directory)."""
    return f"sqlite:///{(root or Path.cwd()).resolve() / 'mlflow.db'}"


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI, else the SQLite store of `root` (default: the working directory)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or local_store_uri(root)


def start_tracking(experiment: str, root: Path) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # set_tracking_uri exports MLFLOW_TRACKING_URI itself, so "the variable is set" cannot tell a
    # server from our own store (a second model in one process would take ./mlruns of its folder
    # for a server's default): compare the URI with the local store's instead
    uri = tracking_uri(root)
    local_store = uri == local_store_uri(root)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if local_store:
        location = (root.resolve() / "mlartifacts").as_uri()
    return str(mlflow.create_experiment(experiment, artifact_location=location))


def training_run(experiment_id: str, model: str, checkpoint_sha256: str) -> str:
    """The newest run of this model that trained this exact checkpoint; a new run when none is
    known to this store (the model was trained on another machine against another store)."""
    import mlflow
    from mlflow import MlflowClient

    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{CHECKPOINT_TAG}` = '{checkpoint_sha256}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs:
        return str(runs[0].info.run_id)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({MODEL_TAG: model, CHECKPOINT_TAG: checkpoint_sha256})
        return str(run.info.run_id)


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


def registered_version(client: Any, name: str, onnx_sha256: str) -> str | None:
    """The newest version of registered model `name` tagged with this ONNX file's sha256, if any:
    the registry is looked up by content, so the same model is never registered twice and a
    release finds its version without trusting a number written on another machine."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(
            f"name = '{name}' and tags.onnx_sha256 = '{onnx_sha256}'"
        )
    except MlflowException:
        return None
    versions = sorted((int(v.version) for v in found), reverse=True)
    return str(versions[0]) if versions else None
