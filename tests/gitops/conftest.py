"""Argo CD on the local cluster: `make gitops-up` once per module, on a trained model.

The staging tests share the session's cluster (tests/cluster/conftest.py) and serve a copy of
the repository with the session's trained model (`pipeline_workspace`), time-scaled by 60 so a
canary takes seconds; each module stops Argo CD and deletes what it made when it is done."""

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

from scripts.cluster.control_plane import Layout
from scripts.gitops.release_loop import Network
from tests.cluster.conftest import cluster  # noqa: F401 (the session's cluster, shared)

REPO = Path(__file__).resolve().parents[2]
TIME_FACTOR = 60
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


def gitops_up(layout: Layout, source: Path, model: Path, cluster_name: str) -> Iterator[Gitops]:
    result = gitops(
        layout,
        "up",
        f"--cluster={cluster_name}",
        f"--source={source}",
        f"--model={model}",
        f"--time-factor={TIME_FACTOR}",
        f"--poll={POLL_SECONDS}",
        "--timeout=300",
    )
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        record = json.loads((layout.root / "gitops" / "state.json").read_text())
        api = config.new_client_from_config(config_file=str(layout.kubeconfig))
        yield Gitops(layout, source, record, api, result.stdout)
    finally:
        down = gitops(layout, "down")
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture(scope="module")
def staging(cluster: Layout, pipeline_workspace: Path) -> Iterator[Gitops]:  # noqa: F811
    yield from gitops_up(
        cluster, pipeline_workspace, pipeline_workspace / "models" / "model.onnx", "staging"
    )
