"""clusters/production synced by the real Argo CD, on a local cluster of its own (production is
its own cluster: its root, projects and platform Applications share names with staging's).

What only production shows: its apps never sync by themselves (a reviewed merge request, then a
human syncs), and its platform project's deny window (weekends, `manualSync: true`) holds
automated syncs but lets a human through."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scripts.cluster.__main__ import pod_cidr
from scripts.cluster.control_plane import Layout
from scripts.gitops.__main__ import GitopsError, drop_held_operation, held_by_window, sync_by_hand
from scripts.gitops.release_loop import clone_served
from scripts.gitops.served import git
from tests.gitops.conftest import REPO, Gitops, gitops_up
from tests.gitops.test_staging import push, sync_health, wait_for

pytestmark = pytest.mark.e2e

APP = "digits-classifier-production"


def cluster_command(layout: Layout, command: str) -> subprocess.CompletedProcess[str]:
    # a /24 of its own next to the session cluster's, whatever the folder hashes to
    session = ipaddress.ip_network(pod_cidr(Layout.default()))
    own = ipaddress.ip_network(f"{session.network_address + 256}/24")
    return subprocess.run(
        [sys.executable, "-m", "scripts.cluster", command],
        cwd=REPO,
        env={**os.environ, "CLUSTER_DIR": str(layout.root), "POD_CIDR": str(own)},
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory, trained_repo: Path) -> Iterator[Gitops]:
    layout = Layout(tmp_path_factory.mktemp("production-cluster"))
    started = cluster_command(layout, "up")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield from gitops_up(layout, trained_repo, "production")
    finally:
        cluster_command(layout, "down")


def app(gitops: Gitops, name: str = APP) -> dict[str, Any]:
    return gitops.application(name)


def test_the_production_app_stays_out_of_sync_until_a_human_syncs_it(production: Gitops) -> None:
    before = app(production)
    assert before["spec"]["syncPolicy"].get("automated") is None
    assert sync_health(before) == ("OutOfSync", "Missing")
    reconciled = before["status"]["reconciledAt"]
    wait_for(
        "another reconciliation",
        lambda: app(production)["status"]["reconciledAt"] > reconciled,
    )
    still = app(production)
    assert sync_health(still) == ("OutOfSync", "Missing")
    assert not still["status"].get("operationState")  # Argo CD started no sync of its own
    with pytest.raises(ApiException) as missing:
        client.CoreV1Api(production.api).read_namespace(APP)
    assert missing.value.status == 404
    # a human syncs (what `argocd app sync` asks for): Argo CD deploys it
    sync_by_hand(production.custom, APP, "release-manager")
    synced = wait_for(
        "the production app to be Synced and Healthy",
        lambda: (found if sync_health(found := app(production)) == ("Synced", "Healthy") else None),
        timeout=180,
    )
    operation = synced["status"]["operationState"]
    assert operation["operation"]["initiatedBy"]["username"] == "release-manager"
    assert operation["phase"] == "Succeeded"


def test_the_weekend_window_holds_automated_syncs_but_lets_a_human_through(
    production: Gitops, tmp_path: Path
) -> None:
    """The shipped deny window of platform-production, moved to now (schedule only)."""
    clone = clone_served(production.network, tmp_path / "clone")
    git(clone, "config", "user.email", "dev@example.com")
    git(clone, "config", "user.name", "dev")
    projects = clone / "clusters/production/projects.yaml"
    shipped = projects.read_text()
    assert 'schedule: "0 0 * * 6"' in shipped
    projects.write_text(shipped.replace('schedule: "0 0 * * 6"', 'schedule: "* * * * *"'))
    opened = push(production, clone, "test: the weekend window, open now")
    root = "root-production"

    def window_live() -> bool:
        project = production.custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "argocd", "appprojects", "platform-production"
        )
        return bool(project["spec"]["syncWindows"][0]["schedule"] == "* * * * *")

    # on a weekend the shipped window is already open, and only a human gets this through
    deadline = time.monotonic() + 30
    while not window_live() and time.monotonic() < deadline:
        time.sleep(0.5)
    if not window_live():  # the controller may have started its own sync of it meanwhile
        sync_by_hand(production.custom, root, "platform-admin", retry_for=120)
    wait_for("the open window in the live project", window_live)

    # The automated sync that applied the window is held by it from its next wave on ("Sync
    # operation blocked by sync window"), Running with nothing to end it: a hand sync is refused
    # while it is there, and the admin removes it (docs/ARGOCD.md).
    def settled() -> str | None:
        found = app(production, root)
        if not found.get("operation"):
            return "done"
        return "held" if held_by_window(found) else None

    if wait_for("the root's own sync to end or be held by the window", settled) == "held":
        with pytest.raises(GitopsError, match="another operation is already in progress"):
            sync_by_hand(production.custom, root, "platform-admin")
        drop_held_operation(production.custom, root)
    del opened
    described = projects.read_text().replace(
        "description: Model-serving apps discovered",
        "description: Model-serving apps (production) discovered",
    )
    projects.write_text(described)
    change = push(production, clone, "production: describe the apps project")

    def held() -> bool:
        status = app(production, root).get("status") or {}
        return (status.get("sync") or {}).get("revision") == change.commit and status["sync"][
            "status"
        ] == "OutOfSync"

    wait_for("the root to see the change", held)
    reconciled = app(production, root)["status"]["reconciledAt"]
    wait_for(
        "another reconciliation",
        lambda: app(production, root)["status"]["reconciledAt"] > reconciled,
    )
    assert held()
    log = (production.layout.root / "logs" / "argocd-application-controller.log").read_text()
    assert re.search(
        rf"{root}.*Sync prevented by sync window|Sync prevented by sync window.*{root}", log
    )
    # manualSync: true: a platform admin may still sync by hand
    sync_by_hand(production.custom, root, "platform-admin")
    wait_for(
        "the hand sync to apply the change",
        lambda: (
            (app(production, root)["status"].get("operationState") or {}).get("phase")
            == "Succeeded"
            and app(production, root)["status"]["operationState"]["syncResult"]["revision"]
            == change.commit
        ),
        timeout=120,
        explain=lambda: {
            key: (app(production, root).get("status") or {}).get(key)
            for key in ("operationState", "conditions", "sync")
        },
    )
    project = production.custom.get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "appprojects", "apps-production"
    )
    assert project["spec"]["description"].startswith("Model-serving apps (production)")
