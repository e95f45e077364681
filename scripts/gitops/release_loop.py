"""The release loop on the local cluster, with no hand in between: a release commit pushed to the
served repository, Argo CD noticing it, syncing, and the real Argo Rollouts controller judging the
canary. Used by the release tests and by `make bench-gitops`.

1. `clone_served`: a throwaway clone of the served repository, over HTTPS through the proxy, as a
   developer or CI job clones GitLab.
2. `release`: a process image for the new image tag (what CI's image build would push), then
   `make release TAG=...` in the clone (the project's own release tool writes the tag into the
   staging overlay and commits; its MLflow registry is a throwaway one), then `git push`.
3. `watch`: while load flows to the app's client Service, the timeline of the Application
   (revision seen, sync done, health) and of the Rollout, until the controller promotes or
   aborts the new revision (or pauses it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from ml.catalog import CatalogError, ModelEntry, load_catalog
from ml.registration import read_record
from ml.tracking import registered_version
from scripts.cluster.canary import client_service, deciding_metric, process_image, rollout_of
from scripts.cluster.control_plane import Layout
from scripts.gitops.served import git
from scripts.manifests.render import render_overlay
from scripts.release import ReleaseError, image_tag_for
from scripts.rehearsal.canary import Outcome, Verdict

GROUP, VERSION = "argoproj.io", "v1alpha1"


class ReleaseLoopError(RuntimeError):
    """The loop could not run or reached no verdict in time; the message says where it stopped."""


@dataclass(frozen=True)
class Network:
    """How a process on this machine reaches the served repository (gitops state.json)."""

    url: str
    proxy: str
    ca: str

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HTTPS_PROXY": self.proxy,
            "NO_PROXY": "127.0.0.1,localhost",
            "GIT_SSL_CAINFO": self.ca,
        }


def clone_served(network: Network, target: Path) -> Path:
    result = subprocess.run(
        ["git", "clone", "-q", network.url, str(target)],
        env=network.env(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ReleaseLoopError(f"git clone {network.url}: {result.stderr.strip()}")
    return target


def seed_registry(clone: Path, entry: ModelEntry, tracking_uri: str) -> None:
    """A throwaway MLflow registry holding the version the clone's registration record
    describes (tagged with its ONNX sha256, as the register stage tags it), so the release tool
    finds it by content and can move its alias; CI's registry already has it."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    record = read_record(clone / entry.folder / "registration.json")
    registry = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if registered_version(registry, record.model_name, record.onnx_sha256) is not None:
        return
    try:
        registry.create_registered_model(record.model_name)
    except MlflowException:
        pass  # registered by an earlier release of the same clone
    registry.create_model_version(
        record.model_name,
        source=f"{entry.folder}/model.onnx",
        tags={"onnx_sha256": record.onnx_sha256},
    )


@dataclass
class Released:
    tag: str
    image: str
    commit: str
    pushed_at: float
    """time.monotonic() when the push returned."""


def release(
    layout: Layout,
    network: Network,
    clone: Path,
    tag: str,
    model: Path,
    faults: dict[str, str] | None = None,
    say: Callable[[str], None] = print,
) -> Released:
    """Build the image the release names (`model` served, `faults` baked in), run the project's
    `make release TAG=<app>/vX.Y.Z` in `clone` (dry run off, no push by the tool), push it."""
    try:
        entry, version = load_catalog(clone / "models.yaml").for_tag(tag)
        expected_tag = image_tag_for(version)
    except (CatalogError, ReleaseError) as exc:
        raise ReleaseLoopError(f"TAG={tag}: {exc}") from None
    overlay = clone / "apps" / entry.app / "overlays" / "staging"
    repository = rollout_of(render_overlay(overlay))["spec"]["template"]["spec"]["containers"][0][
        "image"
    ].rpartition(":")[0]
    # the registry lives beside the clone, not in it: the release tool refuses a dirty tree
    tracking = f"sqlite:///{clone.parent / (clone.name + '-mlflow.db')}"
    seed_registry(clone, entry, tracking)
    venv = Path(sys.executable).parent.parent
    stamp = venv / ".bootstrap-stamp"
    command = ["make", "--no-print-directory", "-C", str(clone), "release", f"TAG={tag}"]
    command += [f"VENV={venv}", "-o", str(stamp)]  # the clone uses this checkout's venv as is
    # a CI runner sets CI, and `make release` then passes --push: the tool would release on the
    # remote tip and push itself, leaving the clone's branch behind. This loop pushes the
    # commit the tool made, so the run is the same on a laptop and on a runner
    command += ["CI="]
    env = {k: v for k, v in network.env().items() if k != "CI" and not k.startswith("CI_")}
    result = subprocess.run(
        command,
        env={**env, "MLFLOW_TRACKING_URI": tracking},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ReleaseLoopError(f"make release TAG={tag}:\n{result.stdout}{result.stderr}")
    image = rollout_of(render_overlay(overlay))["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]
    if image != f"{repository}:{expected_tag}":
        raise ReleaseLoopError(f"after make release, the staging overlay names {image}")
    # CI pushes the image before the release job runs: so does this, as a process image
    process_image(layout, repository, model, faults or {}, tag=image.rpartition(":")[2])
    say(f"release {tag}: image {image}{' with ' + str(faults) if faults else ''}")
    push = subprocess.run(
        ["git", "push", "-q", "origin", "HEAD:main"],
        cwd=clone,
        env=network.env(),
        capture_output=True,
        text=True,
    )
    if push.returncode != 0:
        raise ReleaseLoopError(f"git push: {push.stderr.strip()}")
    return Released(tag, image, git(clone, "rev-parse", "HEAD"), time.monotonic())


def revert(network: Network, clone: Path, commit: str) -> Released:
    """Roll back the GitOps way: a revert commit, pushed."""
    git(clone, "revert", "--no-edit", commit)
    push = subprocess.run(
        ["git", "push", "-q", "origin", "HEAD:main"],
        cwd=clone,
        env=network.env(),
        capture_output=True,
        text=True,
    )
    if push.returncode != 0:
        raise ReleaseLoopError(f"git push: {push.stderr.strip()}")
    return Released("revert", "", git(clone, "rev-parse", "HEAD"), time.monotonic())


@dataclass
class Timeline:
    verdict: Verdict | None = None
    seen: dict[str, float] = field(default_factory=dict)
    """Event -> seconds after the push: detected, synced, canary-started, verdict."""
    health: list[str] = field(default_factory=list)
    """The Application's health as it changed (Argo CD's judgement of the Rollout)."""
    events: list[str] = field(default_factory=list)


class Watch:
    """Follows one Application and its Rollout after a push."""

    def __init__(self, api: client.ApiClient, application: str, say: Callable[[str], None]):
        self.custom = client.CustomObjectsApi(api)
        self.application = application
        self.say = say

    def app(self) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, "argocd", "applications", self.application
        )
        return found

    def rollout(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "rollouts", name
        )
        return found

    def analysis_runs(self, namespace: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "analysisruns"
        ).get("items", [])
        return runs

    def follow(
        self,
        released: Released,
        until: Callable[[Timeline, dict[str, Any], dict[str, Any] | None], bool],
        timeout: float,
    ) -> Timeline:
        """Poll until `until(timeline, application, rollout)` holds."""
        timeline = Timeline()
        deadline = time.monotonic() + timeout
        rollout_name = ""
        last: tuple[Any, ...] = ()
        while True:
            now = time.monotonic() - released.pushed_at
            app = self.app()
            status = app.get("status") or {}
            namespace = app["spec"]["destination"]["namespace"]
            if (status.get("sync") or {}).get("revision") == released.commit:
                timeline.seen.setdefault("detected", now)
            operation = status.get("operationState") or {}
            if (
                operation.get("phase") == "Succeeded"
                and (operation.get("syncResult") or {}).get("revision") == released.commit
            ):
                timeline.seen.setdefault("synced", now)
            health = str((status.get("health") or {}).get("status", ""))
            if not timeline.health or timeline.health[-1] != health:
                timeline.health.append(health)
            if not rollout_name:
                rollout_name = next(
                    (
                        r["name"]
                        for r in status.get("resources") or []
                        if r.get("kind") == "Rollout"
                    ),
                    "",
                )
            rollout = self.rollout(namespace, rollout_name) if rollout_name else None
            seen = (
                health,
                (status.get("sync") or {}).get("status"),
                operation.get("phase"),
                ((rollout or {}).get("status") or {}).get("phase"),
                ((rollout or {}).get("status") or {}).get("currentStepIndex"),
                ((rollout or {}).get("status") or {}).get("message"),
            )
            if seen != last:
                line = (
                    f"[{now:6.1f} s] app {seen[1]}/{seen[0]} (operation {seen[2]}); rollout"
                    f" {seen[3]} step {seen[4]}{': ' + str(seen[5]) if seen[5] else ''}"
                )
                timeline.events.append(line)
                self.say(line)
                last = seen
            if until(timeline, app, rollout):
                return timeline
            if time.monotonic() > deadline:
                raise ReleaseLoopError(
                    f"{self.application}: no verdict {timeout:g} s after the push of"
                    f" {released.commit[:12]}; last: {last}"
                )
            time.sleep(0.25)


def verdict_of(rollout: dict[str, Any], image: str, runs: list[dict[str, Any]]) -> Verdict | None:
    """The controller's verdict on the revision running `image`, once it has one."""
    status = rollout.get("status") or {}
    spec_image = rollout["spec"]["template"]["spec"]["containers"][0]["image"]
    if spec_image != image or str(status.get("observedGeneration")) != str(
        rollout["metadata"].get("generation")
    ):
        return None
    if status.get("abort"):
        ordered = sorted(
            runs, key=lambda r: str(r["metadata"]["creationTimestamp"]) + r["metadata"]["name"]
        )
        metric, _ = deciding_metric(ordered)
        return Verdict(Outcome.ABORTED, metric=metric, reason=str(status.get("message", "")))
    reasons = [c.get("reason") for c in status.get("pauseConditions") or []]
    if "InconclusiveAnalysisRun" in reasons:
        return Verdict(Outcome.PAUSED, reason="inconclusive analysis")
    steps = ((rollout["spec"].get("strategy") or {}).get("canary") or {}).get("steps") or []
    promoted = (
        status.get("phase") == "Healthy"
        and status.get("stableRS") == status.get("currentPodHash")
        and int(status.get("currentStepIndex") or 0) >= len(steps)
    )
    return Verdict(Outcome.PROMOTED) if promoted else None


def load_service(clone: Path, app: str) -> str:
    """The client Service of the staging overlay (the one spanning stable and canary pods)."""
    objects = render_overlay(clone / "apps" / app / "overlays" / "staging")
    return client_service(objects, rollout_of(objects))
