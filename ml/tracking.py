"""MLflow wiring. Nothing happens at import: stages call `start_tracking` when they need it.

Default store: one SQLite file at the repository root (`mlflow.db`, artifacts in `mlartifacts/`,
both git-ignored), shared by every model, whose stages run in their own folders;
MLFLOW_TRACKING_URI points everything at a server instead. Each model logs to its own experiment
(models.yaml `experiment`).

The store's artifact locations are relative (`mlartifacts`), never an absolute path: MLflow
freezes the location it is given into mlflow.db and every run and model under it, so a copied or
moved workspace would go on writing into the original's folder. MLflow resolves a relative
location against the working directory, so every MLflow call of a stage runs inside
`at_store_root` (the repository root), and `mlflow ui` / `mlflow models serve` are run from there.
Under `dvc exp run --temp/--queue` a stage runs in a copy of the repository that DVC deletes
afterwards: DVC names the real repository in DVC_ROOT, and the store lives there.

Stages find their training run by content, not by an id written into a git-tracked file: train
tags the run with the checkpoint's sha256, and evaluate/register look the run up by that tag.
A run id is a fact of one machine's store; a fresh clone re-running the pipeline writes the
same tracked files and never shows a diff.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, closing
from pathlib import Path
from typing import Any

CHECKPOINT_TAG = "mlops.checkpoint_sha256"
MODEL_TAG = "mlops.model"
EXPERIMENT_TAG = "mlops.dvc_experiment"  # the `dvc exp run` experiment a run belongs to
ARTIFACTS = "mlartifacts"  # relative to the store root: see the module docstring


def store_root(repo_root: Path) -> Path:
    """Where the local store lives: the repository DVC runs the pipeline for (DVC_ROOT, which
    `dvc exp run --temp` points at the real repository, not its throw-away copy), else
    `repo_root`."""
    named = os.environ.get("DVC_ROOT")
    if named and (Path(named) / "models.yaml").is_file():
        return Path(named).resolve()
    return repo_root.resolve()


def dvc_experiment() -> str | None:
    """The name of the `dvc exp run` experiment this stage runs in, None on the main pipeline.
    DVC sets DVC_EXP_NAME for every experiment it runs (workspace, --temp, --queue); DVCLive
    reads the same variable to tell experiments apart."""
    return os.environ.get("DVC_EXP_NAME") or None


@contextmanager
def at_store_root(root: Path) -> Iterator[None]:
    """Run MLflow calls with the working directory at the store root, where the relative
    artifact locations resolve; local paths handed to MLflow inside must be absolute."""
    previous = Path.cwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(previous)


def _relative_artifact_locations(db: Path, root: Path) -> None:
    """Rewrite absolute artifact locations under `root` in the experiments table as relative ones
    (MLflow's API absolutises every location it is given, including the Default experiment's it
    creates with the store; runs and models created later copy their experiment's). Locations
    outside `root` are left alone."""
    with closing(sqlite3.connect(db)) as connection, connection:
        rows = connection.execute("SELECT experiment_id, artifact_location FROM experiments")
        for experiment_id, location in rows.fetchall():
            path = location[len("file://") :] if location.startswith("file://") else location
            if path.startswith(f"{root}/"):
                connection.execute(
                    "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                    (path[len(str(root)) + 1 :], experiment_id),
                )


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
    if not local_store:
        return str(mlflow.create_experiment(experiment))
    root = root.resolve()
    created = str(mlflow.create_experiment(experiment, artifact_location=str(root / ARTIFACTS)))
    _relative_artifact_locations(root / "mlflow.db", root)
    return created


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
