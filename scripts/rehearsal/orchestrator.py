"""The live rehearsal: a real Prometheus, a stable and a canary instance of the model service, load
split by the Rollout's current weight, and the analysis of `canary.py` querying that Prometheus.

Every process is started by this module, in its own session (a Ctrl-C in the terminal reaches the
rehearsal, which then stops them in order, rather than each child dying mid-write), on a port
picked free, with its files under one temporary directory removed afterwards unless `keep`.
Stopping is by process id: SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Literal, Mapping, Sequence

import httpx

from scripts.local_service import free_port
from scripts.rehearsal.analysis import SystemClock
from scripts.rehearsal.canary import CanaryRehearsal, Event, RehearsalResult, RolloutSpecError
from scripts.rehearsal.prometheus import PrometheusClient, PrometheusQuery, ProviderError

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP_HINT = (
    "run `make bootstrap` (scripts/bootstrap.sh installs the Debian packages listed in "
    "system-packages.txt, including `prometheus`), or `apt-get install -y "
    "--no-install-recommends prometheus`"
)


Role = Literal["stable", "canary"]
ROLES: tuple[Role, Role] = ("stable", "canary")


class RehearsalSetupError(RuntimeError):
    """The rehearsal could not be set up (missing binary, process died, not ready in time)."""


# ---------------------------------------------------------------------------------------------
# Processes


class ManagedProcess:
    """One child process with its log file; stopped by pid, never by name."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # the terminal's Ctrl-C goes to us, not to the children
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_seconds: float = 5.0) -> int | None:
        """SIGTERM, wait up to `grace_seconds`, then SIGKILL; returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=grace_seconds)
        return process.returncode

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    process: ManagedProcess | None = None,
    poll: float = 0.05,
) -> None:
    """Poll `condition` until it holds; fail fast if `process` dies, with its log tail."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if process is not None and not process.alive():
            raise RehearsalSetupError(
                f"{process.name} exited (code {process.process and process.process.returncode}) "
                f"before {what}:\n{process.log_tail()}"
            )
        if time.monotonic() > deadline:
            tail = f":\n{process.log_tail()}" if process is not None else ""
            raise RehearsalSetupError(f"timed out after {timeout:g} s waiting for {what}{tail}")
        time.sleep(poll)


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _ready_check(url: str) -> Callable[[], bool]:
    return lambda: _http_ok(url)


# ---------------------------------------------------------------------------------------------
# Prometheus


def prometheus_binary() -> str:
    """The Prometheus server binary, or a clear error pointing at the bootstrap."""
    found = os.environ.get("REHEARSAL_PROMETHEUS") or shutil.which("prometheus")
    if not found:
        raise RehearsalSetupError(
            f"the `prometheus` binary was not found on PATH: {BOOTSTRAP_HINT}"
        )
    return found


@dataclass(frozen=True)
class ScrapeTarget:
    role: Role
    port: int
    labels: Mapping[str, str]


def prometheus_config(targets: Sequence[ScrapeTarget], scrape_interval: float) -> str:
    """A scrape config giving each instance the labels its pod would get from the PodMonitor
    (namespace, pod, rollouts_pod_template_hash) plus `role`, so the queries run unchanged."""
    interval = f"{int(scrape_interval * 1000)}ms"
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [
            {
                "job_name": "model-server",
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{target.port}"], "labels": dict(target.labels)}
                    for target in targets
                ],
            }
        ],
    }
    # JSON is YAML, and needs no dependency to write.
    return json.dumps(config, indent=2)


# ---------------------------------------------------------------------------------------------
# Load


def load_rows_from_split(path: Path) -> list[list[float]]:
    """The load a rehearsal sends: the model's own test split (never rows it trained on),
    ordered class 0, 1, ..., 0, 1, ... so that each instance, walking the list from the start,
    sees the same class mix as the other: the class-shift analysis then measures the model, not
    the luck of which rows each side happened to draw."""
    from ml.cli import StageError
    from ml.data import class_interleaved, load_split

    try:
        split = load_split(path.parent, path.stem)
    except StageError as exc:
        raise RehearsalSetupError(f"{exc} (the load is the model's test split)") from None
    classes = int(split.y.max()) + 1 if len(split.y) else 0
    if classes == 0:
        raise RehearsalSetupError(f"{path}: an empty test split cannot drive a rehearsal")
    rows: list[list[float]] = class_interleaved(split, classes).tolist()
    return rows


@dataclass
class LoadStats:
    sent: int = 0
    failed: int = 0  # non-2xx or transport errors


class LoadGenerator:
    """Sends `rps` single-image /predict requests per second, split stable/canary by the weight.

    One paced thread per instance: the canary gets `rps * weight / 100`, stable the rest. Pacing
    waits on a stop event, so stop() interrupts it at once.
    """

    def __init__(
        self, urls: Mapping[str, str], rows: Sequence[Sequence[float]], rps: float
    ) -> None:
        self.urls = dict(urls)
        self.bodies = [json.dumps({"instances": [list(row)]}).encode() for row in rows]
        self.rps = rps
        self.weight = 0.0
        self.stats = {role: LoadStats() for role in self.urls}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def set_weight(self, weight: float) -> None:
        with self._changed:
            self.weight = weight
            self._changed.notify_all()

    def rate(self, role: str) -> float:
        share = self.weight / 100.0 if role == "canary" else 1.0 - self.weight / 100.0
        return self.rps * share

    def start(self) -> None:
        for role in self.urls:
            thread = threading.Thread(target=self._drive, args=(role,), name=f"load-{role}")
            thread.daemon = True  # never keeps the interpreter alive if stop() was skipped
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    def _drive(self, role: str) -> None:
        stats = self.stats[role]
        cursor = 0
        with httpx.Client(timeout=10.0) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                rate = self.rate(role)
                if rate <= 0:
                    with self._changed:  # idle until the weight gives this instance traffic
                        self._changed.wait_for(
                            lambda: self._stop.is_set() or self.rate(role) > 0, timeout=1.0
                        )
                    next_at = time.monotonic()
                    continue
                body = self.bodies[cursor % len(self.bodies)]
                cursor += 1
                try:
                    response = client.post(
                        self.urls[role], content=body, headers={"content-type": "application/json"}
                    )
                    ok = response.status_code // 100 == 2
                except httpx.HTTPError:
                    ok = False
                stats.sent += 1
                stats.failed += 0 if ok else 1
                next_at += 1.0 / rate
                delay = next_at - time.monotonic()
                if delay < -1.0:
                    next_at = time.monotonic()  # fell behind (slow canary): do not burst
                elif delay > 0:
                    self._stop.wait(delay)


# ---------------------------------------------------------------------------------------------
# The environment


@dataclass
class RehearsalOptions:
    overlay: Path = REPO_ROOT / "apps/digits-classifier/overlays/staging"
    candidate_model: str = str(REPO_ROOT / "models/digits/model.onnx")
    # the requests: rows of the candidate's own test split (load_rows_from_split)
    load_rows: Sequence[Sequence[float]] = ()
    registration: str | None = None
    stable_model: str | None = None  # default: the candidate itself (first release)
    stable_registration: str | None = None
    time_factor: float = 60.0
    rps: float = 100.0
    scrape_interval: float = 1.0
    canary_faults: Mapping[str, str] = field(default_factory=dict)  # FAULT_* variables
    stable_faults: Mapping[str, str] = field(default_factory=dict)
    manual_gates: Literal["pass", "stop"] = "pass"
    max_seconds: float = 300.0
    keep: bool = False
    startup_timeout: float = 60.0


def pod_template_hash(role: str, model: str, faults: Mapping[str, str]) -> str:
    """A stand-in for the ReplicaSet's pod-template hash: differs between stable and canary."""
    digest = hashlib.sha256(f"{role}|{model}|{sorted(faults.items())}".encode()).hexdigest()
    return digest[:10]


def load_manifests(overlay: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Rollout and the AnalysisTemplates of the rendered overlay (never a second copy)."""
    from scripts.manifests.render import RenderError, render_overlay

    try:
        objects = render_overlay(overlay)
    except RenderError as exc:
        raise RolloutSpecError(f"{overlay}: kustomize failed: {exc}") from None
    rollouts = [o for o in objects if o.get("kind") == "Rollout"]
    if len(rollouts) != 1:
        raise RolloutSpecError(f"{overlay}: expected one Rollout, rendered {len(rollouts)}")
    templates = [
        o for o in objects if o.get("kind") in ("AnalysisTemplate", "ClusterAnalysisTemplate")
    ]
    return with_replicas(rollouts[0], objects), templates


def with_replicas(rollout: dict[str, Any], objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The Rollout with the replica count it will run at: an HPA that targets it sets
    spec.replicas (its minReplicas at rest), which decides the canary's pods per weight."""
    spec = rollout.get("spec") or {}
    if spec.get("replicas") is not None:
        return rollout
    name = (rollout.get("metadata") or {}).get("name")
    for obj in objects:
        hpa = obj.get("spec") or {}
        target = hpa.get("scaleTargetRef") or {}
        if obj.get("kind") == "HorizontalPodAutoscaler" and target.get("kind") == "Rollout":
            if target.get("name") == name:
                return {**rollout, "spec": {**spec, "replicas": int(hpa.get("minReplicas", 1))}}
    return rollout


class RehearsalEnvironment:
    """Prometheus + stable + canary + load, as a context manager that always cleans up."""

    def __init__(self, options: RehearsalOptions, rollout: Mapping[str, Any]) -> None:
        self.options = options
        self.rollout = rollout
        metadata = rollout.get("metadata") or {}
        self.namespace = str(metadata.get("namespace") or "default")
        self.rollout_name = str(metadata.get("name") or "rollout")
        stable_model = options.stable_model or options.candidate_model
        self.hashes = {
            "stable": pod_template_hash("stable", stable_model, options.stable_faults),
            "canary": pod_template_hash("canary", options.candidate_model, options.canary_faults),
        }
        self.models = {"stable": stable_model, "canary": options.candidate_model}
        self.registrations = {
            "stable": options.stable_registration if options.stable_model else options.registration,
            "canary": options.registration,
        }
        self.faults = {"stable": options.stable_faults, "canary": options.canary_faults}
        self.workdir: Path | None = None
        self.prometheus: ManagedProcess | None = None
        self.prometheus_url = ""
        self.services: dict[str, ManagedProcess] = {}
        self.service_urls: dict[str, str] = {}
        self.load: LoadGenerator | None = None
        self._stack = ExitStack()

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> "RehearsalEnvironment":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop load, then every process (reverse start order), then remove the files."""
        self._stack.close()
        if self.workdir is not None and not self.options.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _start(self) -> None:
        binary = prometheus_binary()  # fail before creating anything
        self.workdir = Path(tempfile.mkdtemp(prefix="rehearsal-"))
        ports = {"stable": free_port(), "canary": free_port()}
        for role in ("stable", "canary"):
            self.services[role] = self._service(role, ports[role])
        prometheus_port = free_port()
        self.prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        self.prometheus = self._prometheus(binary, prometheus_port, ports)
        processes = [*self.services.values(), self.prometheus]
        for process in processes:
            process.start()
            self._stack.callback(process.stop)
        for role, process in self.services.items():
            url = f"http://127.0.0.1:{ports[role]}"
            self.service_urls[role] = url
            wait_until(
                _ready_check(f"{url}/v2/health/ready"),
                self.options.startup_timeout,
                f"the {role} service to be ready",
                process,
            )
        wait_until(
            lambda: _http_ok(f"{self.prometheus_url}/-/ready"),
            self.options.startup_timeout,
            "Prometheus to be ready",
            self.prometheus,
        )
        self.load = LoadGenerator(
            {role: f"{url}/predict" for role, url in self.service_urls.items()},
            self.options.load_rows,
            self.options.rps,
        )
        self.load.start()
        self._stack.callback(self.load.stop)
        # Both targets scraped and up, twice, before step 0: the cluster's state when a rollout
        # begins (the pods exist and Prometheus knows them).
        wait_until(
            lambda: self._targets_up(samples=2),
            self.options.startup_timeout,
            "Prometheus to scrape both instances",
            self.prometheus,
            poll=0.2,
        )

    def _service(self, role: str, port: int) -> ManagedProcess:
        assert self.workdir is not None
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("FAULT_") and key not in ("MODEL_URI", "MODEL_REGISTRATION")
        }
        env.update(
            {
                "MODEL_URI": self.models[role],
                "PORT": str(port),
                "HOST": "127.0.0.1",
                "DEPLOY_ENV": "dev",  # the service refuses fault injection in production
                "LOG_LEVEL": "warning",
                "PYTHONUNBUFFERED": "1",
                **dict(self.faults[role]),
            }
        )
        registration = self.registrations[role]
        if registration:
            env["MODEL_REGISTRATION"] = registration
        return ManagedProcess(
            f"{role} service",
            [sys.executable, "-m", "ml.serving"],
            self.workdir / f"{role}.log",
            env=env,
            cwd=REPO_ROOT,
        )

    def _prometheus(self, binary: str, port: int, ports: Mapping[str, int]) -> ManagedProcess:
        assert self.workdir is not None
        targets = [
            ScrapeTarget(
                role,
                ports[role],
                {
                    "namespace": self.namespace,
                    "pod": f"{self.rollout_name}-{self.hashes[role]}-{role}",
                    "rollouts_pod_template_hash": self.hashes[role],
                    "role": role,
                },
            )
            for role in ROLES
        ]
        config = self.workdir / "prometheus.yml"
        config.write_text(prometheus_config(targets, self.options.scrape_interval))
        return ManagedProcess(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            self.workdir / "prometheus.log",
        )

    def _targets_up(self, samples: int) -> bool:
        query = (
            f'count(count_over_time(up{{job="model-server"}}[1h]) >= {samples} '
            'and up{job="model-server"} == 1)'
        )
        try:
            data = self.client(PrometheusQuery(self.prometheus_url, query, 2.0))
        except ProviderError:
            return False
        result = data.get("result") or []
        return bool(result) and float(result[0]["value"][1]) == 2

    # -- rehearsal ------------------------------------------------------------------------

    @property
    def client(self) -> PrometheusClient:
        return PrometheusClient(address_override=self.prometheus_url)

    def set_weight(self, weight: float) -> None:
        assert self.load is not None
        self.load.set_weight(weight)


def run_rehearsal(
    options: RehearsalOptions,
    on_event: Callable[[Event, RehearsalEnvironment], None] | None = None,
    manifests: tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]] | None = None,
) -> tuple[RehearsalResult, dict[str, Any]]:
    """Render, start everything, play the rollout, stop everything. Returns the result and a few
    measured facts (durations, request counts) for the report."""
    started = time.monotonic()
    prometheus_binary()  # fail before rendering anything
    for model in (options.candidate_model, options.stable_model):
        if model and not model.startswith("models:/") and not Path(model).is_file():
            raise RehearsalSetupError(f"model {model} does not exist: run `make pipeline` first")
    if not options.load_rows:
        raise RehearsalSetupError("no load: the options carry no rows (the model's test split)")
    rollout, templates = manifests or load_manifests(options.overlay)
    with RehearsalEnvironment(options, rollout) as env:
        ready = time.monotonic()

        def forward(event: Event) -> None:
            if on_event is not None:
                on_event(event, env)

        rehearsal = CanaryRehearsal(
            rollout,
            templates,
            env.client,
            SystemClock(),
            time_factor=options.time_factor,
            stable_hash=env.hashes["stable"],
            canary_hash=env.hashes["canary"],
            set_weight=env.set_weight,
            on_event=forward,
            manual_gates=options.manual_gates,
            max_seconds=options.max_seconds,
            min_pause_seconds=2 * options.scrape_interval,
        )
        result = rehearsal.run()
        assert env.load is not None
        facts: dict[str, Any] = {
            "setup_seconds": round(ready - started, 2),
            "rollout_seconds": result.duration,
            "requests": {role: stats.sent for role, stats in env.load.stats.items()},
            "failed_requests": {role: stats.failed for role, stats in env.load.stats.items()},
            "workdir": str(env.workdir) if options.keep else None,
            "prometheus": env.prometheus_url,
            "pod_template_hashes": dict(env.hashes),
        }
    facts["total_seconds"] = round(time.monotonic() - started, 2)
    return result, facts
