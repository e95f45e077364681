"""Resolve ``models:/<name>@<alias>`` and ``models:/<name>/<version>`` through the MLflow registry.

Imported only when such a URI is used, so a service started on a baked-in file never pays for
importing mlflow (cold start). The store is the pipeline's (``ml.tracking``):
``MLFLOW_TRACKING_URI`` or the repo's SQLite file.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from ml.serving.model import ModelError, parse_registration, read_regular_file

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def parse_registry_uri(uri: str) -> tuple[str, str | None, str | None]:
    """-> (name, alias, version); exactly one of alias and version is set."""
    match = _URI.match(uri)
    if match is None:
        raise ModelError(
            f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version> (digits)"
        )
    return match["name"], match["alias"], match["version"]


def fetch_registered_model(
    uri: str, destination: Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """Download the registered version's artifacts into ``destination`` (default: a new
    temporary directory the caller owns); -> (path of its one .onnx file, record)."""
    name, alias, version = parse_registry_uri(uri)
    try:
        import mlflow
        from mlflow import MlflowClient
    except ImportError as exc:  # the serving image may leave mlflow out on purpose
        raise ModelError(f"{uri}: registry URIs need the mlflow package installed") from exc
    from ml.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri())
    try:
        found = (
            client.get_model_version_by_alias(name, alias)
            if alias is not None
            else client.get_model_version(name, str(version))
        )
        target = destination or Path(tempfile.mkdtemp(prefix="serving-model-"))
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{found.version}", dst_path=str(target)
        )
        run = client.get_run(found.run_id) if found.run_id else None
    except Exception as exc:  # mlflow raises MlflowException, OSError, HTTP errors ...
        raise ModelError(f"{uri}: registry lookup failed: {str(exc).splitlines()[0]}") from exc
    onnx_files = sorted(Path(local).rglob("*.onnx"))
    if len(onnx_files) != 1:
        raise ModelError(
            f"{uri}: version {found.version} holds {len(onnx_files)} .onnx files; expected one"
        )
    record_file = onnx_files[0].with_name("registration.json")
    if record_file.exists():  # shipped with the artifacts: held to the pipeline's contract
        record = parse_registration(
            read_regular_file(record_file, "registration record"), f"{uri}: registration.json"
        )
    else:  # built here from the registry's own data
        tags = dict(run.data.tags) if run is not None else {}
        record = {
            "run_id": found.run_id,
            "git_commit": found.tags.get("git_commit") or tags.get("mlflow.source.git.commit"),
            "params": dict(run.data.params) if run is not None else {},
            "metrics": dict(run.data.metrics) if run is not None else {},
        }
        # the register stage tags each version with its input schema and task (JSON)
        for key, tag in (("input", "input_schema"), ("task", "task")):
            if found.tags.get(tag):
                record[key] = json.loads(found.tags[tag])
    record.update(
        model_name=name,
        version=str(found.version),
        alias=alias or record.get("alias"),
        model_uri=f"models:/{name}/{found.version}",
    )
    return onnx_files[0], record
