"""`make canary`: the canary of an overlay, run and judged by the real Argo Rollouts controller.

On the local cluster (`make cluster-up`): the overlay is rendered as Argo CD would render it and
applied with the stable image, which the controller deploys at once (a first deploy skips every
step); then the same manifests are applied with the candidate image, as a release commit would
have Argo CD do, and the controller walks the canary steps, creating AnalysisRuns from the
overlay's AnalysisTemplates against a real Prometheus that discovers the pods through the API
server. Load goes to the ready endpoints of the app's client Service in turn, as kube-proxy
would send it, so the stable/canary split is the controller's own (replica counts here, without
traffic routing). The verdict is read from the Rollout's status and its AnalysisRuns.

Time is scaled like the rehearsal's: pause durations and analysis intervals are divided by
`--time-factor` (5m -> 15 s at the default 20) in the applied copy; PromQL windows are not touched.
Exit codes: 0 promoted, 1 aborted, 2 paused, 3 could not run, 4 the controller refused the
Rollout (InvalidSpec).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ml.catalog import CatalogError, load_catalog
from ml.registration import RecordError, read_record
from scripts.cluster.control_plane import REPO_ROOT, ClusterError, Layout, State
from scripts.cluster.images import build_image
from scripts.engines import component_version_of, program_path
from scripts.manifests.render import RenderError, render_overlay
from scripts.rehearsal.analysis import parse_duration
from scripts.rehearsal.canary import Outcome, Verdict
from scripts.rehearsal.orchestrator import RehearsalSetupError, load_rows_from_split

SERVING_DOCKERFILE = REPO_ROOT / "ml" / "serving" / "Dockerfile"
ENGINE_NOTE = (
    "Judged by the real Argo Rollouts controller {version} on the local cluster (Kubernetes"
    " {kubernetes}; pods run as local processes by the node agent, Prometheus is real)."
)


class CanaryError(RuntimeError):
    """The canary could not be run (no cluster, a manifest the cluster refuses...)."""


INVALID_SPEC_SECONDS = 10.0


class _Refused(Exception):
    """The controller marked the Rollout InvalidSpec: a verdict, reached before any pod ran."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


def _invalid_spec(status: dict[str, Any]) -> Verdict | None:
    """The InvalidSpec verdict when the Rollout's status carries that condition (an unresolved
    argument, an analysis that can never end...: the controller runs no step of it)."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "InvalidSpec" and condition.get("status") == "True":
            return Verdict(Outcome.INVALID, reason=str(condition.get("message", "")))
    return None


@dataclass
class Options:
    overlay: Path
    candidate_model: Path
    stable_model: Path | None = None
    namespace: str | None = None
    # 20, not 60: PromQL windows are not scaled, and at 60 a 2 s pause gave a healthy canary too
    # few requests for the class-shift test (two healthy candidates aborted on 2026-12-04)
    time_factor: float = 20.0
    rps: float = 50.0
    faults: dict[str, str] = field(default_factory=dict)
    manual_gates: str = "pass"
    timeout: float = 600.0
    warmup: float = 3.0
    report_dir: Path = REPO_ROOT / "reports" / "canary"
    keep: bool = False
    first_deploy_only: bool = False
    # the load: the model's own test split (scripts.rehearsal.orchestrator.load_rows_from_split)
    load: Path | None = None


@dataclass
class TimelineEvent:
    at: float
    text: str


@dataclass
class CanaryResult:
    verdict: Verdict
    events: list[TimelineEvent]
    runs: list[dict[str, Any]]
    duration: float
    time_factor: float
    namespace: str
    first_deploy: str = ""
    requests: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# What is applied


def scaled_duration(duration: object, factor: float) -> str:
    """An Argo duration (int seconds or "2m") divided by `factor`, as an Argo duration string
    ("2s", "500ms"); the one rule for every time-scaled copy (this canary, make gitops-up)."""
    seconds = (
        float(duration) if isinstance(duration, (int, float)) else parse_duration(str(duration))
    )
    milliseconds = max(1, round(seconds / factor * 1000))
    return f"{milliseconds}ms" if milliseconds % 1000 else f"{milliseconds // 1000}s"


def scale_time(objects: list[dict[str, Any]], factor: float) -> list[str]:
    """Divide the Rollout's pause durations and the AnalysisTemplates' intervals and initial
    delays by `factor`, in place; returns what changed, for the report."""
    notes: list[str] = []
    if factor == 1:
        return notes
    for obj in objects:
        where = f"{obj.get('kind')} {(obj.get('metadata') or {}).get('name')}"
        notes += scale_durations(obj, factor, where)
    return notes


def scale_durations(node: Any, factor: float, where: str) -> list[str]:
    """Divide, in place, every `pause.duration` (a canary step) and every analysis metric's
    `interval` and `initialDelay` (a mapping that also has a `provider`) anywhere under `node`
    by `factor`; -> one line per value changed. Works on parsed objects and on ruamel's
    comment-keeping documents alike (make gitops-up scales the served files with it)."""
    changes: list[str] = []
    if isinstance(node, list):
        for item in node:
            changes += scale_durations(item, factor, where)
        return changes
    if not isinstance(node, dict):
        return changes
    pause = node.get("pause")
    if isinstance(pause, dict) and pause.get("duration") is not None:
        before = pause["duration"]
        pause["duration"] = scaled_duration(before, factor)
        changes.append(f"{where}: pause {before} -> {pause['duration']}")
    if "provider" in node:
        for key in ("interval", "initialDelay"):
            if node.get(key):
                before = node[key]
                node[key] = scaled_duration(before, factor)
                changes.append(
                    f"{where}: {node.get('name', 'metric')} {key} {before} -> {node[key]}"
                )
    for key, value in node.items():
        if key != "pause":
            changes += scale_durations(value, factor, where)
    return changes


def set_namespace(objects: list[dict[str, Any]], namespace: str) -> None:
    for obj in objects:
        if obj.get("kind") == "Namespace":
            obj["metadata"]["name"] = namespace
        elif "namespace" in obj.get("metadata", {}):
            obj["metadata"]["namespace"] = namespace


def rollout_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    rollouts = [o for o in objects if o.get("kind") == "Rollout"]
    if len(rollouts) != 1:
        raise CanaryError(f"the overlay renders {len(rollouts)} Rollouts; expected one")
    return rollouts[0]


def client_service(objects: list[dict[str, Any]], rollout: dict[str, Any]) -> str:
    """The Service clients call: selects the Rollout's pods, is neither the canary nor the
    stable Service (the controller pins those to one ReplicaSet), and has a cluster IP."""
    canary = (rollout["spec"].get("strategy") or {}).get("canary") or {}
    reserved = {canary.get("canaryService"), canary.get("stableService")}
    labels = rollout["spec"]["template"]["metadata"].get("labels") or {}
    for obj in objects:
        if obj.get("kind") != "Service" or obj["metadata"]["name"] in reserved:
            continue
        spec = obj.get("spec") or {}
        selector = spec.get("selector") or {}
        if spec.get("clusterIP") == "None" or not selector:
            continue
        if all(labels.get(k) == v for k, v in selector.items()):
            return str(obj["metadata"]["name"])
    raise CanaryError(
        "no client Service selects the Rollout's pods (besides its canary and stable Services):"
        " clients of a canary without traffic routing need one that spans both ReplicaSets"
    )


# ---------------------------------------------------------------------------------------------
# Images


def process_image(
    layout: Layout, repository: str, model: Path, faults: dict[str, str], tag: str | None = None
) -> str:
    """A serving process image of `model` (and its registration record) with `faults` baked in
    as environment, like a faulty build would carry them; -> the image reference."""
    record = model.with_name("registration.json")
    if record.is_file():  # the service refuses a model its record does not describe: say it now
        described = read_record(record).onnx_sha256
        actual = hashlib.sha256(model.read_bytes()).hexdigest()
        if described != actual:
            raise CanaryError(
                f"{model} (sha256 {actual[:12]}) is not the model {record} describes"
                f" ({described[:12]}): run `make pipeline`, or pass a folder's model.onnx"
            )
    digest = hashlib.sha256(model.read_bytes() + json.dumps(faults, sort_keys=True).encode())
    ref = f"{repository}:{tag or 'canary-' + digest.hexdigest()[:12]}"
    with tempfile.TemporaryDirectory(prefix="canary-model-") as folder:
        shutil.copy2(model, Path(folder) / "model.onnx")
        if not record.is_file():  # the image copies both files, as the real build does
            raise CanaryError(f"{record}: no registration record beside {model.name}")
        shutil.copy2(record, Path(folder) / "registration.json")
        build_image(
            SERVING_DOCKERFILE,
            REPO_ROOT,
            ref,
            layout.root / "images",
            {"MODEL_DIR": folder},
            extra_env=faults,
        )
    return ref


# ---------------------------------------------------------------------------------------------
# Load, spread over the client Service's ready endpoints as kube-proxy would


class ServiceLoad:
    """`rps` single-row /predict requests per second, each to the next ready endpoint."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        service: str,
        rps: float,
        rows: list[list[float]],
    ) -> None:
        self.discovery = client.DiscoveryV1Api(api)
        self.namespace, self.service, self.rps, self.rows = namespace, service, rps, rows
        self.endpoints: list[tuple[str, int]] = []
        self.sent: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def refresh(self) -> None:
        slices = self.discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector=f"kubernetes.io/service-name={self.service}"
        ).items
        found = []
        for item in slices:
            port = next((p.port for p in item.ports or []), None)
            for endpoint in item.endpoints or []:
                if port and endpoint.conditions and endpoint.conditions.ready:
                    found += [(a, int(port)) for a in endpoint.addresses]
        self.endpoints = sorted(found)

    def start(self) -> None:
        self.refresh()
        self._threads = [
            threading.Thread(target=self._watch, daemon=True),
            threading.Thread(target=self._drive, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.refresh()
            except ApiException:
                pass

    def _drive(self) -> None:
        if self.rps <= 0:
            return
        # each pod walks the class-interleaved rows from its own cursor, so every pod sees the
        # same class mix whatever the number of endpoints (one shared cycle over two endpoints
        # would send one the even classes and the other the odd ones)
        cursors: dict[str, int] = {}
        turn = itertools.count()
        period = 1.0 / self.rps
        next_at = time.monotonic()
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                endpoints = self.endpoints
                if endpoints:
                    address, port = endpoints[next(turn) % len(endpoints)]
                    cursor = cursors.get(address, 0)
                    cursors[address] = cursor + 1
                    row = self.rows[cursor % len(self.rows)]
                    try:
                        answer = http.post(
                            f"http://{address}:{port}/predict", json={"instances": [row]}
                        )
                        ok = answer.status_code < 400
                    except httpx.HTTPError:
                        ok = False
                    self.sent[address] = self.sent.get(address, 0) + 1
                    if not ok:
                        self.failed[address] = self.failed.get(address, 0) + 1
                next_at += period
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_at = time.monotonic()


# ---------------------------------------------------------------------------------------------
# The run


class Canary:
    def __init__(self, options: Options, say: Callable[..., None] = print) -> None:
        self.options = options
        self.layout = Layout.default()
        state = State.read(self.layout)
        if state is None or not state.running():
            raise CanaryError("the local cluster is not up: run `make cluster-up` first")
        self.api = config.new_client_from_config(config_file=str(self.layout.kubeconfig))
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.started = time.monotonic()
        self.events: list[TimelineEvent] = []
        self._say = say

    def say(self, text: str) -> None:
        event = TimelineEvent(time.monotonic() - self.started, text)
        self.events.append(event)
        self._say(f"canary [{event.at:6.1f} s]: {text}", flush=True)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(program_path("kubectl")), f"--kubeconfig={self.layout.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise CanaryError(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()}")
        return result.stdout

    def apply(self, objects: list[dict[str, Any]], namespace: str) -> None:
        """Server-side apply into `namespace`, as Argo CD's sync with ServerSideApply=true
        does into the Application's destination namespace."""
        text = "\n---\n".join(json.dumps(o) for o in objects)
        self.kubectl(
            "apply",
            f"--namespace={namespace}",
            "--server-side",
            "--force-conflicts",
            "--field-manager=argocd-controller",
            "-f",
            "-",
            stdin=text,
        )

    def rollout(self, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, "rollouts", name
        )
        return obj

    def analysis_runs(self, namespace: str) -> list[dict[str, Any]]:
        listing = self.custom.list_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, "analysisruns"
        )
        runs: list[dict[str, Any]] = listing.get("items", [])
        return sorted(
            runs, key=lambda r: r["metadata"]["creationTimestamp"] + r["metadata"]["name"]
        )

    def run(self) -> CanaryResult:
        options = self.options
        try:
            objects = render_overlay(options.overlay)
        except RenderError as exc:
            raise CanaryError(f"{options.overlay}: {exc}") from None
        rollout = rollout_of(objects)
        # a namespace of its own per run: the analyses' 5-minute PromQL windows would otherwise
        # mix in the last run's pods, which carry the same pod-template hash
        run_id = hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()[:6]
        base = rollout["metadata"].get("namespace") or "canary"
        namespace = options.namespace or f"{base}-{run_id}"
        set_namespace(objects, namespace)
        for note in scale_time(objects, options.time_factor):
            self.say(f"time-scaled: {note}")
        container = rollout["spec"]["template"]["spec"]["containers"][0]
        repository, _, stable_tag = container["image"].rpartition(":")
        stable_model = options.stable_model or options.candidate_model
        stable_ref = process_image(self.layout, repository, stable_model, {}, tag=stable_tag)
        candidate_ref = process_image(
            self.layout, repository, options.candidate_model, options.faults
        )
        self.say(f"process images: stable {stable_ref}, candidate {candidate_ref}")
        load = options.load or options.candidate_model.parent / "data/prepared/test.npz"
        return self.judge(
            objects, namespace, stable_ref, candidate_ref, lambda: load_rows_from_split(load)
        )

    def judge(
        self,
        objects: list[dict[str, Any]],
        namespace: str,
        stable_ref: str,
        candidate_ref: str,
        load_rows: Callable[[], list[list[float]]] | None = None,
    ) -> CanaryResult:
        """Deploy `objects` with the stable image, then with the candidate image, and read the
        controller's verdict (the part shared by `make canary` and the rehearsal matrix)."""
        options = self.options
        rollout = rollout_of(objects)
        container = rollout["spec"]["template"]["spec"]["containers"][0]
        self._fresh_namespace(namespace)
        name = rollout["metadata"]["name"]
        container["image"] = stable_ref
        self.apply(objects, namespace)
        self.say(f"applied {len(objects)} objects to {namespace} (stable image)")
        try:
            first, stable_hash = self._wait_first_deploy(namespace, name, objects)
        except _Refused as refused:  # the controller refuses the spec before any pod runs
            return self._result(refused.verdict, namespace, "refused: InvalidSpec", {})
        result_first = f"first deploy promoted without analysis ({first})"
        self.say(result_first)
        if options.first_deploy_only:
            verdict = Verdict(Outcome.PROMOTED, reason="first deploy")
            return self._result(verdict, namespace, result_first, {})
        load: ServiceLoad | None = None
        if options.rps > 0 and load_rows is not None:
            service = client_service(objects, rollout)
            load = ServiceLoad(self.api, namespace, service, options.rps, load_rows())
            load.start()
            self.say(
                f"load: {options.rps:g} req/s to the ready endpoints of Service {service},"
                " round-robin"
            )
        try:
            time.sleep(options.warmup)
            container["image"] = candidate_ref
            self.apply(objects, namespace)
            self.say(
                f"applied the candidate image {candidate_ref}: the controller starts the canary"
            )
            verdict = self._watch(namespace, name, stable_hash)
        finally:
            if load is not None:
                load.stop()
        requests = dict(sorted(load.sent.items())) if load is not None else {}
        return self._result(verdict, namespace, result_first, requests)

    def _result(
        self,
        verdict: Verdict,
        namespace: str,
        first: str,
        requests: dict[str, int],
    ) -> CanaryResult:
        runs = self.analysis_runs(namespace)
        self.say(f"verdict: {verdict.headline()}")
        result = CanaryResult(
            verdict=verdict,
            events=self.events,
            runs=runs,
            duration=time.monotonic() - self.started,
            time_factor=self.options.time_factor,
            namespace=namespace,
            first_deploy=first,
            requests=requests,
        )
        if not self.options.keep:
            self.core.delete_namespace(namespace)
        return result

    def _fresh_namespace(self, namespace: str) -> None:
        try:
            self.core.delete_namespace(namespace)
            self.say(f"namespace {namespace} exists: deleting it first")
        except ApiException as exc:
            if exc.status != 404:
                raise
        deadline = time.monotonic() + 120
        while True:
            try:
                self.core.read_namespace(namespace)
            except ApiException as exc:
                if exc.status == 404:
                    break
                raise
            if time.monotonic() > deadline:
                raise CanaryError(f"namespace {namespace} still terminating after 120 s")
            time.sleep(0.5)
        self.core.create_namespace({"metadata": {"name": namespace}})

    def _minimum_replicas(self, objects: list[dict[str, Any]], name: str) -> int:
        for obj in objects:
            if obj.get("kind") == "HorizontalPodAutoscaler":
                target = obj["spec"].get("scaleTargetRef") or {}
                if target.get("kind") == "Rollout" and target.get("name") == name:
                    return int(obj["spec"].get("minReplicas", 1))
        return 1

    def _wait_first_deploy(
        self, namespace: str, name: str, objects: list[dict[str, Any]]
    ) -> tuple[str, str]:
        want = self._minimum_replicas(objects, name)
        deadline = time.monotonic() + self.options.timeout
        invalid_since: float | None = None
        while time.monotonic() < deadline:
            status = self.rollout(namespace, name).get("status") or {}
            # InvalidSpec shows up for a moment when the Rollout lands before the templates it
            # names ("AnalysisTemplate 'a' not found"), and clears once they exist: only a
            # verdict when it holds for INVALID_SPEC_SECONDS
            invalid = _invalid_spec(status)
            if invalid is None:
                invalid_since = None
            elif invalid_since is None:
                invalid_since = time.monotonic()
            elif time.monotonic() - invalid_since >= INVALID_SPEC_SECONDS:
                raise _Refused(invalid)
            healthy = status.get("phase") == "Healthy" and status.get("stableRS") == status.get(
                "currentPodHash"
            )
            if healthy and int(status.get("availableReplicas") or 0) >= want:
                available = status.get("availableReplicas")
                stable = str(status.get("stableRS"))
                return f"stable ReplicaSet {stable}, {available} pods available", stable
            time.sleep(0.5)
        raise CanaryError(
            f"the stable Rollout {name} was not Healthy with {want} pods"
            f" after {self.options.timeout:g} s"
        )

    def _watch(self, namespace: str, name: str, old_stable: str) -> Verdict:
        """Follow the controller until it promotes, aborts or pauses the new revision."""
        deadline = time.monotonic() + self.options.timeout
        seen: tuple[Any, ...] = ()
        known_runs: dict[str, str] = {}
        gates: list[int] = []
        last_step: int | None = None
        while time.monotonic() < deadline:
            obj = self.rollout(namespace, name)
            status = obj.get("status") or {}
            if status.get("observedGeneration") != str(obj["metadata"].get("generation")) or (
                status.get("currentPodHash") == old_stable
            ):
                time.sleep(0.2)  # the controller has not taken the new revision in yet
                continue
            step = status.get("currentStepIndex")
            phase = status.get("phase")
            message = status.get("message", "")
            now_seen = (step, phase, message, status.get("stableRS"))
            if now_seen != seen:
                self.say(f"rollout: step {step}, phase {phase}{': ' + message if message else ''}")
                seen = now_seen
            for run in self.analysis_runs(namespace):
                run_name, run_phase = run["metadata"]["name"], (run.get("status") or {}).get(
                    "phase", "Pending"
                )
                if known_runs.get(run_name) != run_phase:
                    known_runs[run_name] = run_phase
                    self.say(f"AnalysisRun {run_name}: {run_phase}")
            invalid = _invalid_spec(status)
            if invalid is not None:
                return invalid
            if status.get("abort"):  # the controller resets the step index when it aborts
                return self._aborted(namespace, last_step, status)
            last_step = step
            conditions = status.get("pauseConditions") or []
            reasons = [c.get("reason") for c in conditions]
            if "InconclusiveAnalysisRun" in reasons:  # PauseReasonInconclusiveAnalysis
                metric, reason = self._worst_metric(namespace, ("Inconclusive",))
                return Verdict(
                    Outcome.PAUSED,
                    step=step,
                    metric=metric,
                    reason=reason or "inconclusive analysis",
                )
            if phase == "Paused" and "CanaryPauseStep" in reasons and self._manual_gate(obj, step):
                if self.options.manual_gates == "stop":
                    return Verdict(Outcome.PAUSED, step=step, reason="manual gate")
                if step is not None and step not in gates:
                    gates.append(step)
                    self.say(f"manual gate at step {step}: promoting on a human's behalf")
                    self.kubectl(
                        "patch",
                        "rollout",
                        name,
                        "-n",
                        namespace,
                        "--subresource=status",
                        "--type=merge",
                        "-p",
                        '{"status":{"pauseConditions":null,"controllerPause":false}}',
                    )
            healthy = phase == "Healthy" and status.get("stableRS") == status.get("currentPodHash")
            if healthy and step is not None and step >= len(self._steps(obj)):
                return Verdict(Outcome.PROMOTED, gates_passed=tuple(gates))
            time.sleep(0.5)
        raise CanaryError(f"no verdict after {self.options.timeout:g} s (last: {seen})")

    @staticmethod
    def _steps(rollout: dict[str, Any]) -> list[Any]:
        return list(
            ((rollout["spec"].get("strategy") or {}).get("canary") or {}).get("steps") or []
        )

    def _manual_gate(self, rollout: dict[str, Any], step: int | None) -> bool:
        steps = self._steps(rollout)
        if step is None or step >= len(steps):
            return False
        pause = steps[step].get("pause")
        return isinstance(pause, dict) and pause.get("duration") is None

    def _aborted(self, namespace: str, step: int | None, status: dict[str, Any]) -> Verdict:
        metric, reason = self._worst_metric(namespace, ("Failed", "Error", "Inconclusive"))
        # the controller labels a step's AnalysisRun with its step index: exact even when the
        # abort came faster than this watch saw the step (a short pause, time factor 1)
        for run in reversed(self.analysis_runs(namespace)):
            labels = run["metadata"].get("labels") or {}
            if (run.get("status") or {}).get("phase") in ("Failed", "Error", "Inconclusive"):
                if str(labels.get("step-index", "")).isdigit():
                    step = int(labels["step-index"])
                break
        return Verdict(
            Outcome.ABORTED,
            step=step,
            metric=metric,
            reason=reason or status.get("message", "aborted"),
        )

    def _worst_metric(self, namespace: str, phases: tuple[str, ...]) -> tuple[str, str]:
        return deciding_metric(self.analysis_runs(namespace), phases)


def deciding_metric(
    runs: list[dict[str, Any]], phases: tuple[str, ...] = ("Failed", "Error", "Inconclusive")
) -> tuple[str, str]:
    """The metric that decided the newest finished run (`runs` oldest first) and the
    controller's message: the one the run's message names, else the first of `phases` (in that
    order of precedence) found in it."""
    for run in reversed(runs):
        status = run.get("status") or {}
        results = status.get("metricResults") or []
        # the run's message names the metric that decided it ("Metric "x" assessed ...")
        named = re.search(r'Metric "([^"]+)"', str(status.get("message", "")))
        if named and any(r.get("name") == named[1] for r in results):
            return named[1], str(status["message"])
        for phase in phases:
            for result in results:
                if result.get("phase") == phase:
                    message = result.get("message") or status.get("message")
                    return str(result["name"]), str(message or phase)
    return "", ""


# ---------------------------------------------------------------------------------------------
# Reports


def render_markdown(result: CanaryResult) -> str:
    note = ENGINE_NOTE.format(
        version=component_version_of("rollouts-controller"),
        kubernetes=component_version_of("kube-apiserver"),
    )
    lines = [
        f"### Canary on the local cluster: {result.verdict.headline()}",
        "",
        f"_{note} Durations scaled by 1/{result.time_factor:g}._",
        "",
        f"- namespace: `{result.namespace}`; {result.first_deploy}",
        "- requests per pod address: "
        + (", ".join(f"{a} {n}" for a, n in result.requests.items()) or "none"),
        f"- duration: {result.duration:.1f} s",
        "",
        "| AnalysisRun | metric | phase | measurements | message |",
        "| --- | --- | --- | --- | --- |",
    ]
    for run in result.runs:
        for metric in (run.get("status") or {}).get("metricResults") or []:
            values = ", ".join(
                str(m.get("value", m.get("phase"))) for m in metric.get("measurements") or []
            )
            lines.append(
                f"| {run['metadata']['name']} | {metric['name']} | {metric.get('phase')} |"
                f" {values} | {str(metric.get('message', '')).replace('|', '/')} |"
            )
    lines += ["", "```"] + [f"[{e.at:7.1f}s] {e.text}" for e in result.events] + ["```", ""]
    return "\n".join(lines)


def render_junit(result: CanaryResult) -> str:
    suite = ET.Element("testsuite", name="canary-real-controller")
    failures = 0
    for run in result.runs:
        for metric in (run.get("status") or {}).get("metricResults") or []:
            case = ET.SubElement(
                suite, "testcase", classname=run["metadata"]["name"], name=metric["name"]
            )
            if metric.get("phase") in ("Failed", "Error", "Inconclusive"):
                failures += 1
                ET.SubElement(
                    case,
                    "failure",
                    type=str(metric.get("phase")),
                    message=str(metric.get("message", "")),
                )
    verdict = ET.SubElement(suite, "testcase", classname="canary", name="verdict")
    ET.SubElement(verdict, "system-out").text = result.verdict.headline()
    if result.verdict.outcome != Outcome.PROMOTED:
        failures += 1
        ET.SubElement(
            verdict, "failure", type=str(result.verdict.outcome), message=result.verdict.headline()
        )
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_reports(result: CanaryResult, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "canary.md").write_text(render_markdown(result))
    (folder / "canary-junit.xml").write_text(render_junit(result))
    summary = {
        "verdict": result.verdict.outcome.value,
        "headline": result.verdict.headline(),
        "step": result.verdict.step,
        "metric": result.verdict.metric,
        "duration_s": round(result.duration, 1),
        "namespace": result.namespace,
        "requests": result.requests,
    }
    (folder / "canary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.cluster.canary",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--name",
        default=None,
        help="a model of models.yaml (default: the first); sets the defaults",
    )
    parser.add_argument("--overlay", type=Path, default=None, help="default: its app's staging")
    parser.add_argument(
        "--candidate-model", type=Path, default=None, help="default: the model folder's model.onnx"
    )
    parser.add_argument("--load", type=Path, default=None, help="default: its test split")
    parser.add_argument("--stable-model", type=Path, default=None, help="default: the candidate")
    parser.add_argument(
        "--namespace", default=None, help="default: the overlay's, suffixed with a run id"
    )
    parser.add_argument("--time-factor", type=float, default=Options.time_factor)
    parser.add_argument("--rps", type=float, default=50.0, help="0 = no traffic")
    parser.add_argument("--canary-error-rate", type=float, default=None)
    parser.add_argument("--canary-latency-ms", type=float, default=None)
    parser.add_argument("--canary-degrade", choices=("shuffle", "constant"), default=None)
    parser.add_argument("--manual-gates", choices=("pass", "stop"), default="pass")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--report-dir", type=Path, default=None, help="reports/canary/<name>")
    parser.add_argument("--keep", action="store_true", help="leave the namespace for inspection")
    parser.add_argument("--first-deploy-only", action="store_true")
    args = parser.parse_args(argv)
    try:
        catalog = load_catalog(REPO_ROOT / "models.yaml")
        entry = catalog.get(args.name) if args.name else catalog.entries[0]
    except CatalogError as exc:
        print(f"canary: {exc}", file=sys.stderr)
        return 3
    folder = REPO_ROOT / entry.folder
    faults = {
        key: str(value)
        for key, value in (
            ("FAULT_ERROR_RATE", args.canary_error_rate),
            ("FAULT_LATENCY_MS", args.canary_latency_ms),
            ("FAULT_DEGRADE", args.canary_degrade),
        )
        if value is not None
    }
    options = Options(
        overlay=args.overlay or REPO_ROOT / "apps" / entry.app / "overlays" / "staging",
        candidate_model=args.candidate_model or folder / "model.onnx",
        load=args.load or folder / "data" / "prepared" / "test.npz",
        stable_model=args.stable_model,
        namespace=args.namespace,
        time_factor=args.time_factor,
        rps=args.rps,
        faults=faults,
        manual_gates=args.manual_gates,
        timeout=args.timeout,
        report_dir=args.report_dir or REPO_ROOT / "reports" / "canary" / entry.name,
        keep=args.keep,
        first_deploy_only=args.first_deploy_only,
    )
    try:
        result = Canary(options).run()
    except (CanaryError, ClusterError, ApiException, RecordError, RehearsalSetupError) as exc:
        print(f"canary: {exc}", file=sys.stderr)
        return 3
    write_reports(result, options.report_dir)
    print(f"canary: {result.verdict.headline()} (reports in {options.report_dir})")
    return result.verdict.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
