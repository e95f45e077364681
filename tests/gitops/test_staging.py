"""clusters/staging synced by the real Argo CD, and the release loop with no hand in between.

One `make gitops-up` serves a copy of this repository (with the session's trained model) and
runs Argo CD against the session's cluster. The tests then act only through git, as people and
CI do: push a release, a bad release and its revert, a wiring mistake, a sync window, a
deletion; and read only what Argo CD and the Rollouts controller report. They run in order on
the one served branch (each commit is synced by the same Argo CD)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from scripts.cluster.canary import ServiceLoad
from scripts.gitops.release_loop import (
    Released,
    Timeline,
    Watch,
    clone_served,
    load_service,
    release,
    revert,
    verdict_of,
)
from scripts.gitops.__main__ import sync_by_hand
from scripts.gitops.served import git
from scripts.manifests.render import render_overlay
from scripts.processes import wait_until
from scripts.rehearsal.canary import Outcome
from scripts.rehearsal.orchestrator import load_rows_from_split
from tests.gitops.conftest import Gitops

pytestmark = pytest.mark.e2e

APP = "digits-classifier"
TRACKING = "argocd.argoproj.io/tracking-id"
MODEL = "models/digits"
STAGING_APP = f"{APP}-staging"
NAMESPACE = f"{APP}-staging"


def push(gitops: Gitops, clone: Path, message: str) -> Released:
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", message)
    import subprocess

    subprocess.run(
        ["git", "push", "-q", "origin", "HEAD:main"],
        cwd=clone,
        env=gitops.network.env(),
        check=True,
        capture_output=True,
    )
    return Released(message, "", git(clone, "rev-parse", "HEAD"), time.monotonic())


def wait_for(
    what: str,
    condition: Callable[[], Any],
    timeout: float = 120,
    explain: Callable[[], Any] | None = None,
) -> Any:
    """`condition()` once it is truthy (scripts.processes' poller, at the pace of Argo CD's
    reconciliations); on timeout the error carries `explain()`'s view of the engines."""
    return wait_until(condition, timeout, what, poll=0.5, explain=explain)


def applications(gitops: Gitops) -> dict[str, dict[str, Any]]:
    items = gitops.custom.list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications"
    )["items"]
    return {a["metadata"]["name"]: a for a in items}


def sync_health(app: dict[str, Any]) -> tuple[str, str]:
    status = app.get("status") or {}
    return (status.get("sync") or {}).get("status", ""), (status.get("health") or {}).get(
        "status", ""
    )


@pytest.fixture
def clone(staging: Gitops, tmp_path: Path) -> Path:
    work = clone_served(staging.network, tmp_path / "clone")
    git(work, "config", "user.email", "dev@example.com")
    git(work, "config", "user.name", "dev")
    return work


@pytest.fixture
def load(staging: Gitops) -> Iterator[ServiceLoad]:
    service = load_service(staging.source, APP)
    rows = load_rows_from_split(staging.source / MODEL / "data/prepared/test.npz")
    traffic = ServiceLoad(staging.api, NAMESPACE, service, 40.0, rows)
    traffic.start()
    yield traffic
    traffic.stop()


# ---- the cluster folder, synced ------------------------------------------------------------


def test_every_object_of_the_cluster_folder_is_synced_by_argo_cd(staging: Gitops) -> None:
    apps = applications(staging)
    cluster_objects = render_overlay(staging.source / "clusters/staging")
    root = apps["root-staging"]
    assert sync_health(root) == ("Synced", "Healthy")
    # Argo CD applied every object of clusters/staging (itself included) and reports it Synced
    synced = {(r["kind"], r["name"]): r.get("status") for r in root["status"]["resources"]}
    for obj in cluster_objects:
        assert synced.get((obj["kind"], obj["metadata"]["name"])) == "Synced", obj["metadata"]
    # the ApplicationSet made one Application per config.json, each synced from its overlay
    configs = sorted(staging.source.glob("apps/*/overlays/*/config.json"))
    wanted = {
        f"{c.parent.parent.parent.name}-{c.parent.name}": c.parent
        for c in configs
        if c.parent.name in ("dev", "staging")
    }
    assert len(wanted) == 4  # digits-classifier and breast-cancer, dev and staging
    for name, overlay in wanted.items():
        app = apps[name]
        assert sync_health(app) == ("Synced", "Healthy"), app.get("status", {}).get("conditions")
        assert app["spec"]["source"]["path"] == str(overlay.relative_to(staging.source))
        assert app["status"]["sync"]["revision"] == staging.record["served_commit"]
        resources = {(r["kind"], r["name"]): r for r in app["status"]["resources"]}
        rendered = render_overlay(overlay)
        assert {(o["kind"], o["metadata"]["name"]) for o in rendered} == set(resources)
        # the Rollout judged by Argo CD's own health check, every resource Synced
        rollout = next(r for (kind, _), r in resources.items() if kind == "Rollout")
        assert rollout["health"]["status"] == "Healthy"
        assert {r["status"] for r in resources.values()} == {"Synced"}
    # no generated app outside these (production overlays belong to the production cluster)
    generated = {n for n, a in apps.items() if a["spec"]["project"] == "apps-staging"}
    assert generated == set(wanted)
    # the charts that cannot be fetched are marked, not silently passed
    for name in ("argo-rollouts", "kube-prometheus-stack", "argo-workflows"):
        note = apps[name]["metadata"]["annotations"]["gitops.mlops.example.com/substituted"]
        assert note.startswith("substituted: Helm chart") and name in staging.output
    assert "substituted" in staging.output and "Synced" in staging.output


# ---- the release loop ------------------------------------------------------------------------


def follow_release(
    staging: Gitops, released: Released, done: Callable[[Timeline, dict[str, Any]], bool]
) -> Timeline:
    watch = Watch(staging.api, STAGING_APP, say=lambda line: None)

    def until(timeline: Timeline, app: dict[str, Any], rollout: dict[str, Any] | None) -> bool:
        if rollout is not None and timeline.verdict is None:
            runs = watch.analysis_runs(NAMESPACE)
            timeline.verdict = verdict_of(rollout, released.image, runs)
            if timeline.verdict is not None:
                timeline.seen["verdict"] = time.monotonic() - released.pushed_at
        return timeline.verdict is not None and done(timeline, app)

    return watch.follow(released, until, timeout=300)


def test_a_release_is_detected_synced_and_promoted_by_the_real_controller(
    staging: Gitops, clone: Path, load: ServiceLoad, trained_repo: Path
) -> None:
    released = release(
        staging.layout,
        staging.network,
        clone,
        f"{APP}/v0.2.0",
        trained_repo / MODEL / "model.onnx",
    )
    timeline = follow_release(
        staging, released, lambda t, app: sync_health(app) == ("Synced", "Healthy")
    )
    assert timeline.verdict is not None
    assert timeline.verdict.outcome == Outcome.PROMOTED, "\n".join(timeline.events)
    assert {"detected", "synced", "verdict"} <= set(timeline.seen), timeline.seen
    assert timeline.seen["detected"] <= timeline.seen["synced"] <= timeline.seen["verdict"]
    app = staging.application(STAGING_APP)
    assert app["status"]["sync"]["revision"] == released.commit
    # the canary ran its analyses against the real Prometheus, and they passed
    runs = Watch(staging.api, STAGING_APP, print).analysis_runs(NAMESPACE)
    assert runs and all(r["status"]["phase"] == "Successful" for r in runs)
    assert sum(load.sent.values()) > 0 and not load.failed


def test_a_faulty_release_is_aborted_degraded_then_reverted_to_healthy(
    staging: Gitops, clone: Path, load: ServiceLoad, trained_repo: Path
) -> None:
    before = staging.custom.get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NAMESPACE, "rollouts", f"{APP}-server"
    )
    stable_image = before["spec"]["template"]["spec"]["containers"][0]["image"]
    released = release(
        staging.layout,
        staging.network,
        clone,
        f"{APP}/v0.3.0",
        trained_repo / MODEL / "model.onnx",
        faults={"FAULT_ERROR_RATE": "0.3"},
    )
    timeline = follow_release(staging, released, lambda t, app: sync_health(app)[1] == "Degraded")
    assert timeline.verdict is not None
    assert timeline.verdict.outcome == Outcome.ABORTED, "\n".join(timeline.events)
    assert timeline.verdict.metric in ("error-rate", "success-rate", "error-rate-vs-stable")
    assert "Degraded" in timeline.health  # Argo CD's Rollout health check: aborted = Degraded
    # the stable ReplicaSet still serves every request the client Service gets
    rollout = staging.custom.get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NAMESPACE, "rollouts", f"{APP}-server"
    )
    stable = rollout["status"]["stableRS"]
    pods = (
        client.CoreV1Api(staging.api)
        .list_namespaced_pod(NAMESPACE, label_selector=f"rollouts-pod-template-hash={stable}")
        .items
    )
    stable_ips = {p.status.pod_ip for p in pods}
    wait_for("only stable endpoints", lambda: set(a for a, _ in load.endpoints) <= stable_ips)
    failed_before = sum(load.failed.values())
    sent_before = sum(load.sent.values())
    wait_for("requests to the stable pods", lambda: sum(load.sent.values()) > sent_before + 50)
    assert sum(load.failed.values()) == failed_before
    # roll back the GitOps way: revert the release commit; Argo CD syncs, the app is Healthy
    back = revert(staging.network, clone, released.commit)
    back.image = stable_image

    def healthy_at_revert(timeline: Timeline, app: dict[str, Any]) -> bool:
        return app["status"]["sync"].get("revision") == back.commit and sync_health(app) == (
            "Synced",
            "Healthy",
        )

    after = follow_release(staging, back, healthy_at_revert)
    assert after.health[-1] == "Healthy"
    current = staging.custom.get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NAMESPACE, "rollouts", f"{APP}-server"
    )
    assert current["spec"]["template"]["spec"]["containers"][0]["image"] == stable_image
    assert current["status"]["stableRS"] == stable


def test_a_sync_keeps_the_selector_the_rollouts_controller_set(staging: Gitops) -> None:
    """A Service's selector is one atomic field to server-side apply: a sync that applied the
    git selector would drop the rollouts-pod-template-hash the controller adds to the stable
    and canary Services, and both would span every pod until the controller noticed. The
    ApplicationSet ignores that key and RespectIgnoreDifferences keeps the live value."""
    core = client.CoreV1Api(staging.api)
    rollout = staging.custom.get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NAMESPACE, "rollouts", f"{APP}-server"
    )
    canary = rollout["spec"]["strategy"]["canary"]
    services = (canary["stableService"], canary["canaryService"])
    stable = rollout["status"]["stableRS"]
    key = "rollouts-pod-template-hash"
    for name in services:
        assert core.read_namespaced_service(name, NAMESPACE).spec.selector[key] == stable
    seen: list[tuple[str, dict[str, str]]] = []
    stop = threading.Event()

    def record() -> None:
        # every version of the two Services while the sync runs, not just the last one
        while not stop.is_set():
            stream = watch.Watch().stream(
                core.list_namespaced_service, NAMESPACE, timeout_seconds=2
            )
            for event in stream:
                obj = event["object"]
                if obj.metadata.name in services:
                    seen.append((obj.metadata.name, dict(obj.spec.selector or {})))

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    # known by who started it: a start time has one-second resolution, and an automated sync
    # that ended just before can share our sync's second
    who = f"selector-test-{time.time_ns()}"

    # a full sync: every object applied; refused while an automated sync of an earlier commit
    # runs, so asked again until that one ends
    sync_by_hand(staging.custom, STAGING_APP, who, retry_for=180)

    def operation_state() -> dict[str, Any]:
        return staging.application(STAGING_APP)["status"].get("operationState") or {}

    wait_for(
        "the sync by hand to finish",
        lambda: (op := operation_state()).get("phase") == "Succeeded"
        and ((op.get("operation") or {}).get("initiatedBy") or {}).get("username") == who,
        timeout=180,
        explain=lambda: {k: v for k, v in operation_state().items() if k != "syncResult"},
    )
    time.sleep(3)
    stop.set()
    recorder.join(timeout=10)
    assert seen, "the watch saw no version of the Services"
    assert all(selector.get(key) == stable for _, selector in seen), seen
    for name in services:
        assert core.read_namespaced_service(name, NAMESPACE).spec.selector[key] == stable


# ---- what only Argo CD can show ----------------------------------------------------------------


def test_an_application_outside_its_projects_destinations_is_refused(
    staging: Gitops, clone: Path
) -> None:
    """Wiring production overlays into the staging ApplicationSet: Argo CD refuses the app."""
    path = clone / "clusters/staging/applicationset.yaml"
    text = path.read_text()
    text = text.replace(
        "- path: apps/*/overlays/staging/config.json",
        "- path: apps/*/overlays/staging/config.json\n"
        "              - path: apps/*/overlays/production/config.json",
    )
    path.write_text(text)
    mistake = push(staging, clone, "wire production overlays into staging (a mistake)")

    def refused() -> str:
        app = applications(staging).get(f"{APP}-production")
        for condition in ((app or {}).get("status") or {}).get("conditions") or []:
            if condition["type"] == "InvalidSpecError":
                return str(condition["message"])
        return ""

    message = wait_for("Argo CD to refuse the production app", refused)
    assert message == (
        "application destination server 'https://kubernetes.default.svc' and namespace"
        f" '{APP}-production' do not match any of the allowed destinations in project"
        " 'apps-staging'"
    )
    # nothing of it reached the cluster: Argo CD never started a sync of it, and no object of
    # the app carries its tracking id (the namespace itself may exist: the session's apply
    # check of the production overlay leaves its namespaces, empty)
    refused_app = applications(staging)[f"{APP}-production"]
    assert not (refused_app.get("status") or {}).get("operationState")
    try:
        rollout = staging.custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", f"{APP}-production", "rollouts", f"{APP}-server"
        )
    except ApiException as missing:
        assert missing.status == 404
    else:
        tracking = (rollout["metadata"].get("annotations") or {}).get(TRACKING, "")
        assert not tracking.startswith(f"{APP}-production:")
    revert(staging.network, clone, mistake.commit)
    wait_for("the refused app to go", lambda: f"{APP}-production" not in applications(staging))


def test_a_deny_window_holds_an_automated_sync_until_it_closes(
    staging: Gitops, clone: Path
) -> None:
    projects = clone / "clusters/staging/projects.yaml"
    original = projects.read_text()
    window = (
        "  syncWindows:\n"
        "    - kind: deny\n"
        '      schedule: "* * * * *"\n'
        "      duration: 1h\n"
        f'      applications: ["{APP}-dev"]\n'
    )
    projects.write_text(
        original.replace(
            "  # Apps may create their own namespace",
            window + "  # Apps may create their own namespace",
        )
    )
    opened = push(staging, clone, "deny window on the dev app, open now")
    wait_for(
        "the root to sync the window",
        lambda: "syncWindows"
        in staging.custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "argocd", "appprojects", "apps-staging"
        )["spec"],
    )
    del opened
    replicas = clone / f"apps/{APP}/overlays/dev/replicas.yaml"
    replicas.write_text(replicas.read_text().replace("maxReplicas: 2", "maxReplicas: 3"))
    change = push(staging, clone, "dev: one more replica at most")
    app_name = f"{APP}-dev"

    def seen_out_of_sync() -> bool:
        app = staging.application(app_name)
        status = app.get("status") or {}
        return (status.get("sync") or {}).get("revision") == change.commit and (
            status["sync"]["status"] == "OutOfSync"
        )

    wait_for("the dev app to see the change", seen_out_of_sync)
    # held: several reconciliations later it is still OutOfSync, and no sync ran
    reconciled = staging.application(app_name)["status"]["reconciledAt"]
    wait_for(
        "two more reconciliations",
        lambda: staging.application(app_name)["status"]["reconciledAt"] > reconciled,
    )
    app = staging.application(app_name)
    assert app["status"]["sync"]["status"] == "OutOfSync"
    operation = app["status"].get("operationState") or {}
    assert (operation.get("syncResult") or {}).get("revision") != change.commit
    log = (staging.layout.root / "logs" / "argocd-application-controller.log").read_text()
    assert re.search(
        rf"Sync prevented by sync window.*{app_name}|{app_name}.*Sync prevented by sync window", log
    )
    autoscaling = client.AutoscalingV2Api(staging.api)

    def live_max_replicas() -> int:
        hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler(f"{APP}-server", f"{APP}-dev")
        return int(hpa.spec.max_replicas)

    assert live_max_replicas() == 2  # the held change did not reach the cluster
    # the window closes (removed in git): the automated sync goes ahead
    projects.write_text(original)
    push(staging, clone, "close the deny window")
    wait_for(
        "the dev app to sync the held change",
        lambda: live_max_replicas() == 3
        and sync_health(staging.application(app_name))[0] == "Synced",
        timeout=120,
    )


def test_an_object_deleted_from_git_is_pruned(staging: Gitops, clone: Path) -> None:
    kustomization = clone / f"apps/{APP}/overlays/dev/kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text() + "\n# removed from dev: its PodDisruptionBudget\npatches:\n"
        if "patches:" not in kustomization.read_text()
        else kustomization.read_text()
    )
    text = kustomization.read_text()
    text = text.replace(
        "patches:\n",
        "patches:\n  - patch: |\n      $patch: delete\n      apiVersion: policy/v1\n"
        "      kind: PodDisruptionBudget\n      metadata:\n"
        "        name: digits-classifier-server\n",
        1,
    )
    kustomization.write_text(text)
    assert not any(
        o["kind"] == "PodDisruptionBudget" for o in render_overlay(kustomization.parent)
    ), "the test's own edit must remove the PDB from the rendered overlay"
    push(staging, clone, "dev: no PodDisruptionBudget")
    policy = client.PolicyV1Api(staging.api)

    def gone() -> bool:
        try:
            policy.read_namespaced_pod_disruption_budget(f"{APP}-server", f"{APP}-dev")
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    wait_for("Argo CD to prune the PodDisruptionBudget", gone)

    def listed() -> set[tuple[str, str]]:
        app = staging.application(f"{APP}-dev")
        return {(r["kind"], r["name"]) for r in app["status"]["resources"]}

    # the object goes first; the app's status lists it until the next reconciliation
    wait_for(
        "the pruned object to leave the app's resources",
        lambda: ("PodDisruptionBudget", f"{APP}-server") not in listed(),
        explain=listed,
    )
    assert ("PodDisruptionBudget", f"{APP}-server") not in listed()
