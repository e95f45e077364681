"""Argo CD on the local cluster: `make gitops-up` once per module, on trained models.

The staging tests share the session's cluster (tests/cluster/conftest.py) and serve a copy of
the repository whose models the session trained (`trained_repo`), time-scaled by 20 so a
canary takes about a minute; each module stops Argo CD and deletes what it made when done.

Why 20 and not `make canary`'s 60: the AnalysisTemplates' PromQL windows are not scaled, and a
canary pod's counters start from nothing, so the first increments of each predicted class are
lost to `rate()`; after a 2 s pause (2m / 60) the canary's class mix is too few requests to
compare with a stable that has served for minutes, and the real controller aborts a healthy
candidate on class-shift-vs-stable. A 6 s pause gives it enough."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from ml.catalog import load_catalog
from scripts.cluster.control_plane import Layout
from scripts.gitops.release_loop import Network
from scripts.repo_copy import copy_repo, tool_env
from tests.cluster.conftest import cluster  # noqa: F401 (the session's cluster, shared)

REPO = Path(__file__).resolve().parents[2]
TIME_FACTOR = 20
POLL_SECONDS = 3


@dataclass
class Gitops:
    layout: Layout
    source: Path
    record: dict[str, Any]
    api: client.ApiClient
    output: str

    @property
    def network(self) -> Network:
        return Network(self.record["url"], self.record["proxy"], self.record["ca"])

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def application(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "argocd", "applications", name
        )
        return found


def gitops(layout: Layout, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.gitops", *args],
        cwd=REPO,
        env={**os.environ, "CLUSTER_DIR": str(layout.root)},
        capture_output=True,
        text=True,
    )


def gitops_up(layout: Layout, source: Path, cluster_name: str) -> Iterator[Gitops]:
    result = gitops(
        layout,
        "up",
        f"--cluster={cluster_name}",
        f"--source={source}",
        f"--time-factor={TIME_FACTOR}",
        f"--poll={POLL_SECONDS}",
        "--timeout=420",
    )
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        record = json.loads((layout.root / "gitops" / "state.json").read_text())
        api = config.new_client_from_config(config_file=str(layout.kubeconfig))
        yield Gitops(layout, source, record, api, result.stdout)
    finally:
        down = gitops(layout, "down")
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed copy of the repository with every model of models.yaml trained by its own
    `dvc repro`, as a fresh clone's `make pipeline` would, but with this checkout's venv as is:
    the shared `pipeline_workspace` goes through `make`, which re-runs the bootstrap whenever a
    bootstrap input is newer than the venv's stamp (a second venv, gigabytes, in the copy)."""
    workspace = copy_repo(tmp_path_factory.mktemp("gitops-repo"))
    pipelines = [e.pipeline for e in load_catalog(workspace / "models.yaml").entries]
    dvc = Path(sys.executable).parent / "dvc"
    result = subprocess.run(
        [str(dvc), "repro", *pipelines],
        cwd=workspace,
        env=tool_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for pipeline in pipelines:
        assert (workspace / Path(pipeline).parent / "model.onnx").is_file()
    return workspace


@pytest.fixture(scope="module")
def staging(cluster: Layout, trained_repo: Path) -> Iterator[Gitops]:  # noqa: F811
    yield from gitops_up(cluster, trained_repo, "staging")
