"""Retraining triggers: decide from signals, never twice for the same cause, then start a run.

Reasons: input drift (the drift job's verdict), a performance drop on labelled feedback, enough
new labelled rows, the schedule (for setups without the CronWorkflow), or a person (manual).
Guards, in order, each recorded with the decision:
1. duplicate: the same reasons for the same model version and data window already triggered
   (a retried job must not start a second run);
2. in flight: a retraining is still running (asked of the backend; if it cannot tell, a run is
   presumed running until ``max_run_hours`` after it started);
3. cool-down: the last run started less than ``cooldown_hours`` ago (manual triggers skip this
   guard only: a person may insist, but not while a run is in flight).
State is one JSON file (a PersistentVolume in the cluster) written atomically under an
exclusive lock, so a restarted or concurrent job sees every earlier decision.
Dry run evaluates everything, reads the backend's status, and neither submits nor writes.

Backends, each on a well-kept client where one exists: GitLab's pipeline trigger API through
python-gitlab, the Argo Server's WorkflowTemplate submission through hera's WorkflowsService (both
on an injectable ``requests.Session``), and Jenkins' ``buildWithParameters`` on an injected
``httpx.Client`` (a form POST and two JSON reads).

A submission is recorded *before* it is sent (its key and a pending run): if the answer is lost
(a read timeout, a reset connection), the request may have started a pipeline, so the next run
treats the key as used and the run as in flight (until the backend shows otherwise or
``max_run_hours`` pass) instead of submitting a duplicate. A submission refused outright (an HTTP
error, a connection never made) is taken back: nothing started, the next run may try again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote

import gitlab
import httpx
import requests
from gitlab.exceptions import GitlabError
from hera.exceptions import HeraException
from hera.workflows.models import SubmitOpts, WorkflowSubmitRequest
from hera.workflows.service import WorkflowsService
from urllib3.exceptions import NewConnectionError

from ml.config import RetrainParams
from ml.io import write_text

REASONS = ("drift", "performance", "new_data", "schedule", "manual")
STATE_VERSION = 1
_KEEP = 50  # dedup keys and history entries kept: bounded state


class TriggerError(RuntimeError):
    """The trigger cannot decide or cannot submit; the message names the file or endpoint."""


class SubmitOutcomeUnknown(TriggerError):
    """The request went out but its answer was lost: a run may or may not have started."""


def _transport_error(what: str, exc: httpx.HTTPError | requests.RequestException) -> TriggerError:
    """A connection never made means nothing was sent; anything later leaves it unknown."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, requests.ConnectTimeout)):
        return TriggerError(f"{what}: {exc}")
    # requests wraps a refused or unresolvable connection as ConnectionError(MaxRetryError(
    # reason=NewConnectionError)); a reset after the request went out is a ConnectionError too
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError):
        return TriggerError(f"{what}: {exc}")
    return SubmitOutcomeUnknown(f"{what}: {exc} (the request may have been received)")


class TimeoutSession(requests.Session):
    """A requests session whose every call has a timeout: hera's WorkflowsService passes none,
    and a trigger job must not hang on a server that accepts and never answers."""

    def __init__(self, connect_s: float = 5.0, read_s: float = 30.0) -> None:
        super().__init__()
        self.default_timeout = (connect_s, read_s)

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class Signals:
    """What the caller observed; ``window`` names the data they were computed on (dedup)."""

    drift: bool = False
    performance_drop: float | None = None
    new_rows: int | None = None
    scheduled: bool = False
    manual: bool = False
    model_version: str = ""
    window: str = ""


def reasons_for(signals: Signals, params: RetrainParams) -> list[str]:
    out = []
    if signals.drift:
        out.append("drift")
    if signals.performance_drop is not None and signals.performance_drop > params.performance_drop:
        out.append("performance")
    if signals.new_rows is not None and signals.new_rows >= params.new_data_rows:
        out.append("new_data")
    if signals.scheduled:
        out.append("schedule")
    if signals.manual:
        out.append("manual")
    return out


def dedup_key(reasons: list[str], signals: Signals, now: float) -> str:
    """Same cause on the same data and model -> same key. Manual triggers are each unique."""
    parts = ["+".join(sorted(reasons)), signals.model_version, signals.window]
    if "manual" in reasons:
        parts.append(repr(now))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Run:
    backend: str
    id: str
    url: str
    started_at: float
    reasons: tuple[str, ...]
    key: str
    finished: bool = False


@dataclass
class TriggerState:
    last_run: Run | None = None
    recent_keys: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        body = {
            "version": STATE_VERSION,
            "last_run": None if self.last_run is None else asdict(self.last_run),
            "recent_keys": self.recent_keys[-_KEEP:],
            "history": self.history[-_KEEP:],
        }
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TriggerState":
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            raise ValueError(f"expected a version {STATE_VERSION} state document")
        last = raw.get("last_run")
        run = None
        if last is not None:
            run = Run(**{**last, "reasons": tuple(last["reasons"])})
        return cls(run, list(raw.get("recent_keys", [])), list(raw.get("history", [])))


class StateStore:
    """One JSON file plus a lock file beside it; survives restarts on a persistent volume."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self) -> TriggerState:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return TriggerState()
        try:
            return TriggerState.from_json(text)
        except (ValueError, TypeError, KeyError) as exc:
            # a reset would forget the cool-down and could start a retraining storm: stop instead
            raise TriggerError(f"{self.path}: unreadable trigger state ({exc}); fix or remove it")

    def save(self, state: TriggerState) -> None:
        write_text(self.path, state.to_json())


class Backend(Protocol):
    name: str

    def submit(self, reasons: list[str], key: str, now: float) -> Run:
        """Start a retraining run."""

    def running(self, last: Run | None) -> bool | None:
        """Is a retraining running now? None when the backend cannot tell."""


def _check(response: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON object of a successful answer; anything else is a TriggerError naming `what`."""
    if response.status_code >= 400:
        raise TriggerError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    try:
        body = response.json()
    except ValueError as exc:
        raise TriggerError(f"{what}: not JSON: {response.text[:300]}") from exc
    if not isinstance(body, dict):
        raise TriggerError(f"{what}: expected a JSON object, got: {response.text[:300]}")
    return body


class GitLabBackend:
    """python-gitlab: POST /projects/:id/trigger/pipeline with a pipeline trigger token; the
    status of the pipeline it started needs a read token (GET /projects/:id/pipelines/:id)."""

    name = "gitlab"
    _ACTIVE = {"created", "waiting_for_resource", "preparing", "pending", "running", "scheduled"}

    def __init__(
        self,
        api_url: str,
        project: str,
        trigger_token: str,
        ref: str = "main",
        read_token: str | None = None,
        model: str = "",
        session: requests.Session | None = None,
    ) -> None:
        api = api_url.rstrip("/")
        if not api.endswith("/api/v4"):
            raise TriggerError(f"GitLab API URL {api_url!r}: expected .../api/v4 (CI_API_V4_URL)")
        root = api[: -len("/api/v4")]  # python-gitlab appends /api/v4 itself
        session = session or TimeoutSession()
        # Two clients on one session: the trigger call authenticates by its trigger token alone
        # (no PRIVATE-TOKEN beside it), status reads by the read token. No transient retries: a
        # POST retried after a 5xx or a reset could start a second pipeline.
        self._trigger = gitlab.Gitlab(root, session=session, retry_transient_errors=False)
        self._reader = (
            gitlab.Gitlab(root, private_token=read_token, session=session) if read_token else None
        )
        self.project = project
        self.base = f"{api}/projects/{quote(project, safe='')}"  # what messages name
        self.trigger_token = trigger_token
        self.ref = ref
        self.model = model  # models.yaml name: the pipeline retrains only it (RETRAIN_MODEL)

    def submit(self, reasons: list[str], key: str, now: float) -> Run:
        variables = {
            "RETRAIN": "true",
            "RETRAIN_REASON": ",".join(reasons),
            "RETRAIN_KEY": key,
        }
        if self.model:
            variables["RETRAIN_MODEL"] = self.model
        what = f"GitLab trigger at {self.base}"
        project = self._trigger.projects.get(self.project, lazy=True)
        try:
            pipeline = project.trigger_pipeline(self.ref, self.trigger_token, variables=variables)
        except requests.RequestException as exc:
            raise _transport_error(what, exc) from exc
        except GitlabError as exc:
            raise TriggerError(f"{what}: {_gitlab_problem(exc)}") from exc
        attributes = pipeline.attributes
        if "id" not in attributes:
            raise TriggerError(f"{what}: no pipeline id in {attributes}")
        return Run(
            self.name,
            str(attributes["id"]),
            str(attributes.get("web_url") or ""),
            now,
            tuple(reasons),
            key,
        )

    def running(self, last: Run | None) -> bool | None:
        if last is None or last.backend != self.name:
            return False
        if self._reader is None or not last.id:  # no token, or a submission never answered
            return None
        what = f"GitLab pipeline status at {self.base}/pipelines/{last.id}"
        try:
            project = self._reader.projects.get(self.project, lazy=True)
            status = project.pipelines.get(last.id).attributes.get("status")
        except requests.RequestException as exc:
            raise TriggerError(f"{what}: {exc}") from exc
        except GitlabError as exc:
            raise TriggerError(f"{what}: {_gitlab_problem(exc)}") from exc
        return str(status) in self._ACTIVE


def _gitlab_problem(exc: GitlabError) -> str:
    if exc.response_code:
        return f"HTTP {exc.response_code}: {exc.error_message}"
    # a 2xx answer python-gitlab could not read (not JSON, or JSON but not an object)
    return f"expected a JSON object: {exc.error_message}"


class ArgoBackend:
    """hera's WorkflowsService on the Argo Server: submit the WorkflowTemplate; "running" = any
    unfinished workflow of the pipeline."""

    name = "argo"
    PIPELINE_LABEL = "mlops.example.com/pipeline"

    def __init__(
        self,
        server_url: str,
        namespace: str,
        template: str,
        pipeline: str,
        token: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.server = server_url.rstrip("/")
        self.namespace = namespace
        self.template = template
        self.pipeline = pipeline
        # hera joins its paths onto the host (urljoin): the trailing slash keeps a path prefix;
        # it sends the token as "Bearer <token>"
        self.service = WorkflowsService(
            host=self.server + "/",
            token=token,
            namespace=namespace,
            session=session or TimeoutSession(),
        )

    def submit(self, reasons: list[str], key: str, now: float) -> Run:
        what = f"Argo submit at {self.server}/api/v1/workflows/{self.namespace}/submit"
        request = WorkflowSubmitRequest(
            namespace=self.namespace,
            resource_kind="WorkflowTemplate",
            resource_name=self.template,
            submit_options=SubmitOpts(
                labels=f"mlops.example.com/retrain-key={key}",
                parameters=[f"reason={'+'.join(reasons)}"],
            ),
        )
        try:
            workflow = self.service.submit_workflow(request)
        except requests.RequestException as exc:
            raise _transport_error(what, exc) from exc
        except (HeraException, KeyError, ValueError) as exc:  # an error status; an odd answer
            raise TriggerError(f"{what}: {exc}") from exc
        name = workflow.metadata.name
        if not name:
            raise TriggerError(f"{what}: no workflow name in the answer")
        ui = f"{self.server}/workflows/{self.namespace}/{name}"
        return Run(self.name, name, ui, now, tuple(reasons), key)

    def running(self, last: Run | None) -> bool | None:
        what = f"Argo workflow list at {self.server}/api/v1/workflows/{self.namespace}"
        selector = f"{self.PIPELINE_LABEL}={self.pipeline},workflows.argoproj.io/completed!=true"
        try:
            found = self.service.list_workflows(label_selector=selector)
        except requests.RequestException as exc:
            raise TriggerError(f"{what}: {exc}") from exc
        except (HeraException, KeyError, ValueError) as exc:
            raise TriggerError(f"{what}: {exc}") from exc
        return bool(found.items)


class JenkinsBackend:
    """POST <jenkins>/job/<job>/buildWithParameters (a user's API token: basic auth, exempt from
    CSRF crumbs); the answer's Location is the queue item, which names the build once it starts.
    Needs the job's parameters RETRAIN, RETRAIN_MODEL, RETRAIN_REASON, RETRAIN_KEY (Jenkinsfile).
    A multibranch job is addressed as `<job>/job/<branch>`."""

    name = "jenkins"

    def __init__(
        self, client: httpx.Client, url: str, job: str, user: str, token: str, model: str = ""
    ) -> None:
        self.client = client
        self.url = url.rstrip("/")
        self.job = "/job/".join(quote(part, safe="") for part in job.split("/job/"))
        self.auth = (user, token)
        self.model = model

    def submit(self, reasons: list[str], key: str, now: float) -> Run:
        url = f"{self.url}/job/{self.job}/buildWithParameters"
        data = {
            "RETRAIN": "true",
            "RETRAIN_REASON": ",".join(reasons),
            "RETRAIN_KEY": key,
            "RETRAIN_MODEL": self.model,
        }
        try:
            response = self.client.post(url, data=data, auth=self.auth)
        except httpx.HTTPError as exc:
            raise _transport_error(f"Jenkins build at {url}", exc) from exc
        if response.status_code >= 400:
            raise TriggerError(f"Jenkins build at {url}: HTTP {response.status_code}")
        queue = response.headers.get("location", "")
        if "/queue/item/" not in queue:
            raise TriggerError(f"Jenkins build at {url}: no queue item in the answer's Location")
        return Run(self.name, queue, queue, now, tuple(reasons), key)

    def running(self, last: Run | None) -> bool | None:
        """Queued or building: True; finished: False; the queue item forgotten (Jenkins keeps
        them about 5 minutes after the build starts) or never answered: None."""
        if last is None or last.backend != self.name:
            return False
        if not last.id:
            return None
        item = self._json(f"{last.id.rstrip('/')}/api/json")
        if item is None:
            return None
        if item.get("cancelled"):
            return False
        executable = item.get("executable")
        if not isinstance(executable, dict) or not executable.get("url"):
            return True  # still waiting in the queue
        build = self._json(f"{str(executable['url']).rstrip('/')}/api/json?tree=building")
        return None if build is None else bool(build.get("building"))

    def _json(self, url: str) -> dict[str, Any] | None:
        try:
            response = self.client.get(url, auth=self.auth)
        except httpx.HTTPError as exc:
            raise TriggerError(f"Jenkins status at {url}: {exc}") from exc
        if response.status_code == 404:
            return None
        return _check(response, f"Jenkins status at {url}")


Action = Literal["none", "skipped", "dry-run", "triggered"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: tuple[str, ...]
    why: str
    key: str = ""
    run: Run | None = None
    decided_at: float = 0.0
    last_run: Run | None = None
    cooldown_remaining_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reasons": list(self.reasons),
            "why": self.why,
            "key": self.key,
            "decided_at": self.decided_at,
            "run": None if self.run is None else asdict(self.run),
            "last_run": None if self.last_run is None else asdict(self.last_run),
            "cooldown_remaining_s": round(self.cooldown_remaining_s, 3),
        }


class Trigger:
    def __init__(
        self,
        store: StateStore,
        backend: Backend | None,
        params: RetrainParams,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if backend is None and not dry_run:
            raise TriggerError("no retraining backend configured: pass one, or use dry run")
        self.store = store
        self.backend = backend
        self.params = params
        self.dry_run = dry_run
        self.clock = clock

    def evaluate(self, signals: Signals) -> Decision:
        now = self.clock()
        reasons = reasons_for(signals, self.params)
        with self.store.locked():
            state = self.store.load()
            decision = self._decide(state, reasons, signals, now)
            if decision.action == "triggered":
                decision = self._submit(state, decision, now)
            if not self.dry_run and decision.action != "none":
                state.history = (state.history + [decision.to_dict()])[-_KEEP:]
                self.store.save(state)
        return decision

    def _submit(self, state: TriggerState, decision: Decision, now: float) -> Decision:
        """Record the key and a pending run, then submit; keep the record if the answer was
        lost, take it back if the submission was refused."""
        assert self.backend is not None  # __init__ refuses no backend outside dry run
        before = (state.last_run, list(state.recent_keys))
        reasons = list(decision.reasons)
        pending = Run(self.backend.name, "", "", now, tuple(reasons), decision.key)
        state.last_run = pending
        state.recent_keys = (state.recent_keys + [decision.key])[-_KEEP:]
        self.store.save(state)
        try:
            run = self.backend.submit(reasons, decision.key, now)
        except SubmitOutcomeUnknown as error:
            lost = replace(decision, action="skipped", why=f"submission outcome unknown: {error}")
            state.history = (state.history + [lost.to_dict()])[-_KEEP:]
            self.store.save(state)
            raise
        except BaseException as error:
            state.last_run, state.recent_keys = before
            failed = replace(decision, action="skipped", why=f"submission refused: {error}")
            state.history = (state.history + [failed.to_dict()])[-_KEEP:]
            self.store.save(state)
            raise
        state.last_run = run
        return replace(decision, why=f"started {run.backend} run {run.id}", run=run)

    def _decide(
        self, state: TriggerState, reasons: list[str], signals: Signals, now: float
    ) -> Decision:
        remaining = self._cooldown_remaining(state.last_run, now)

        def made(action: Action, why: str, key: str = "", run: Run | None = None) -> Decision:
            return Decision(action, tuple(reasons), why, key, run, now, state.last_run, remaining)

        if not reasons:
            return made("none", "no signal over its threshold")
        key = dedup_key(reasons, signals, now)
        if key in state.recent_keys:
            return made("skipped", "duplicate: already triggered for this cause", key)
        if self._in_flight(state, now):
            last = state.last_run
            where = last.url if last is not None and last.url else "the backend"
            return made("skipped", f"in flight: a retraining is still running ({where})", key)
        if remaining > 0 and "manual" not in reasons:
            return made("skipped", f"cool-down: {remaining / 3600:.1f} h left", key)
        if self.dry_run:
            return made("dry-run", "would trigger (dry run: nothing submitted)", key)
        return made("triggered", "submitting", key)  # evaluate() submits and records

    def _cooldown_remaining(self, last: Run | None, now: float) -> float:
        if last is None:
            return 0.0
        return max(0.0, last.started_at + self.params.cooldown_hours * 3600 - now)

    def _in_flight(self, state: TriggerState, now: float) -> bool:
        last = state.last_run
        answer = None if self.backend is None else self.backend.running(last)
        if answer is not None:
            if not answer and last is not None and not last.finished:
                state.last_run = replace(last, finished=True)  # saved with the decision
            return answer
        if last is None or last.finished:
            return False
        return now - last.started_at < self.params.max_run_hours * 3600
