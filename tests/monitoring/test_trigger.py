"""Retraining triggers: dedup, in-flight and cool-down guards that survive a restart, dry run, and
the two backends' HTTP calls against a fake server on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ml.config import RetrainParams, load_params
from ml.monitoring.trigger import (
    ArgoBackend,
    GitLabBackend,
    Run,
    Signals,
    StateStore,
    Trigger,
    TriggerError,
    TriggerState,
    reasons_for,
)
from tests.conftest import REPO

from .conftest import FakeClock, FakeHTTP, Recorded

# the digits model: its own params over the shared root file, as the drift CronJob gets them
DIGITS_PARAMS = [
    "--params",
    str(REPO / "models/digits/params.yaml"),
    "--shared-params",
    str(REPO / "params.yaml"),
]

ARGO_SUBMIT = "POST /api/v1/workflows/ml-prod/submit"
ARGO_LIST = "GET /api/v1/workflows/ml-prod"
GITLAB_TRIGGER = "POST /api/v4/projects/mlops%2Fgitops/trigger/pipeline"


def params(**update: Any) -> RetrainParams:
    return load_params(
        REPO / "models/digits/params.yaml", REPO / "params.yaml"
    ).monitoring.retrain.model_copy(update=update)


class ArgoServer:
    """Scripted Argo Server: numbered workflows, `running` says whether any is unfinished."""

    def __init__(self, fake: FakeHTTP) -> None:
        self.fake = fake
        self.running = False
        self.submitted = 0
        fake.routes[ARGO_SUBMIT] = self._submit
        fake.routes[ARGO_LIST] = self._list

    def _submit(self, request: Recorded) -> tuple[int, Any]:
        self.submitted += 1
        self.running = True
        name = f"training-{self.submitted}"
        return 200, {"metadata": {"name": name, "namespace": "ml-prod"}, "spec": {}}

    def _list(self, request: Recorded) -> tuple[int, Any]:
        # Argo answers `items: null` for an empty list
        items = [{"metadata": {"name": "x"}, "spec": {}}] if self.running else None
        return 200, {"metadata": {"resourceVersion": "1"}, "items": items}


def argo_trigger(fake: FakeHTTP, state: Path, clock: FakeClock, **kwargs: Any) -> Trigger:
    backend = ArgoBackend(fake.url, "ml-prod", "digits-training", "dvc-training", "tok")
    return Trigger(StateStore(state), backend, params(), clock=clock, **kwargs)


def test_argo_submission_sends_the_template_reason_and_dedup_label(
    fake_http: FakeHTTP, tmp_path: Path
) -> None:
    ArgoServer(fake_http)
    decision = argo_trigger(fake_http, tmp_path / "state.json", FakeClock()).evaluate(
        Signals(drift=True, model_version="7", window="window-1")
    )
    assert decision.action == "triggered" and decision.reasons == ("drift",)
    assert decision.run is not None and decision.run.id == "training-1"
    assert decision.run.url == f"{fake_http.url}/workflows/ml-prod/training-1"
    (listed,) = fake_http.calls("GET", "/api/v1/workflows/ml-prod")
    assert listed.query["listOptions.labelSelector"] == [
        "mlops.example.com/pipeline=dvc-training,workflows.argoproj.io/completed!=true"
    ]
    (submitted,) = fake_http.calls("POST", "/api/v1/workflows/ml-prod/submit")
    assert submitted.headers["authorization"] == "Bearer tok"
    body = submitted.json()
    assert body["resourceKind"] == "WorkflowTemplate"
    assert body["resourceName"] == "digits-training"
    assert body["submitOptions"]["parameters"] == ["reason=drift"]
    assert body["submitOptions"]["labels"] == f"mlops.example.com/retrain-key={decision.key}"


def test_dedup_in_flight_and_cool_down_hold_across_a_restart(
    fake_http: FakeHTTP, tmp_path: Path
) -> None:
    """Each evaluation builds a new Trigger and StateStore: only the file carries the state."""
    argo = ArgoServer(fake_http)
    clock, state = FakeClock(), tmp_path / "state.json"

    def evaluate(window: str, **signals: Any) -> tuple[str, str]:
        decision = argo_trigger(fake_http, state, clock).evaluate(
            Signals(model_version="7", window=window, **signals)
        )
        return decision.action, decision.why

    assert evaluate("w1", drift=True)[0] == "triggered"
    # the same job retried on the same data: duplicate, whatever the backend says
    assert evaluate("w1", drift=True) == ("skipped", "duplicate: already triggered for this cause")
    clock.advance(hours=1)
    action, why = evaluate("w2", drift=True)
    assert action == "skipped" and why.startswith("in flight") and "training-1" in why
    argo.running = False  # the run finished
    action, why = evaluate("w3", drift=True)
    assert action == "skipped" and why.startswith("cool-down: 23.0 h left")
    clock.advance(hours=23.5)
    assert evaluate("w4", drift=True)[0] == "triggered"
    assert argo.submitted == 2
    saved = TriggerState.from_json(state.read_text())
    assert saved.last_run is not None and saved.last_run.id == "training-2"
    assert [h["action"] for h in saved.history] == [
        "triggered",
        "skipped",
        "skipped",
        "skipped",
        "triggered",
    ]
    assert saved.history[3]["last_run"]["finished"] is True  # learnt from the backend, saved


def test_a_run_started_elsewhere_blocks_a_trigger(fake_http: FakeHTTP, tmp_path: Path) -> None:
    """The weekly CronWorkflow's run is not in our state, but the backend reports it."""
    argo = ArgoServer(fake_http)
    argo.running = True
    decision = argo_trigger(fake_http, tmp_path / "s.json", FakeClock()).evaluate(
        Signals(drift=True)
    )
    assert decision.action == "skipped" and "the backend" in decision.why
    assert argo.submitted == 0


def test_manual_skips_the_cool_down_but_not_a_run_in_flight(
    fake_http: FakeHTTP, tmp_path: Path
) -> None:
    argo = ArgoServer(fake_http)
    clock, state = FakeClock(), tmp_path / "state.json"
    assert argo_trigger(fake_http, state, clock).evaluate(Signals(drift=True)).action == "triggered"
    manual = argo_trigger(fake_http, state, clock).evaluate(Signals(manual=True))
    assert manual.action == "skipped" and manual.why.startswith("in flight")
    argo.running = False
    clock.advance(hours=1)
    manual = argo_trigger(fake_http, state, clock).evaluate(Signals(manual=True))
    assert manual.action == "triggered" and manual.reasons == ("manual",)
    # a second manual trigger is not a duplicate of the first (each is its own request)
    argo.running = False
    clock.advance(hours=0.1)
    again = argo_trigger(fake_http, state, clock).evaluate(Signals(manual=True))
    assert again.action == "triggered" and again.key != manual.key


def test_dry_run_reads_status_but_submits_and_writes_nothing(
    fake_http: FakeHTTP, tmp_path: Path
) -> None:
    argo = ArgoServer(fake_http)
    state = tmp_path / "state.json"
    decision = argo_trigger(fake_http, state, FakeClock(), dry_run=True).evaluate(
        Signals(drift=True)
    )
    assert decision.action == "dry-run" and decision.key
    assert argo.submitted == 0 and not state.exists()
    assert [r.method for r in fake_http.requests] == ["GET"]


def test_dry_run_needs_no_backend_and_no_signal_means_no_action(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    trigger = Trigger(store, None, params(), dry_run=True, clock=FakeClock())
    assert trigger.evaluate(Signals(drift=True)).action == "dry-run"
    assert trigger.evaluate(Signals()).action == "none"
    with pytest.raises(TriggerError, match="no retraining backend"):
        Trigger(store, None, params())


def test_gitlab_trigger_api_form_and_status_polling(fake_http: FakeHTTP, tmp_path: Path) -> None:
    status = {"value": "running"}
    fake_http.routes[GITLAB_TRIGGER] = lambda r: (
        201,
        {"id": 4711, "web_url": "https://gitlab.example.com/p/4711", "status": "created"},
    )
    fake_http.routes["GET /api/v4/projects/mlops%2Fgitops/pipelines/4711"] = lambda r: (
        200,
        {"id": 4711, "status": status["value"]},
    )
    clock, state = FakeClock(), tmp_path / "state.json"

    def trigger() -> Trigger:
        backend = GitLabBackend(
            f"{fake_http.url}/api/v4",
            "mlops/gitops",
            "trigger-secret",
            ref="main",
            read_token="read-secret",
        )
        return Trigger(StateStore(state), backend, params(), clock=clock)

    first = trigger().evaluate(Signals(performance_drop=0.15, model_version="7", window="a"))
    assert first.action == "triggered" and first.reasons == ("performance",)
    assert first.run is not None and first.run.url == "https://gitlab.example.com/p/4711"
    (posted,) = fake_http.calls("POST", "/api/v4/projects/mlops%2Fgitops/trigger/pipeline")
    sent = posted.json()  # python-gitlab sends JSON; the API takes variables as an object
    assert sent["token"] == "trigger-secret" and sent["ref"] == "main"
    assert sent["variables"]["RETRAIN_REASON"] == "performance"
    assert sent["variables"]["RETRAIN_KEY"] == first.key
    # the trigger token authenticates the trigger alone: the read token is not sent with it
    assert "private-token" not in posted.headers
    clock.advance(hours=30)  # past the cool-down, but GitLab still runs it
    second = trigger().evaluate(Signals(new_rows=900, window="b"))
    assert second.action == "skipped" and second.why.startswith("in flight")
    (polled,) = fake_http.calls("GET", "/api/v4/projects/mlops%2Fgitops/pipelines/4711")
    assert polled.headers["private-token"] == "read-secret"
    status["value"] = "success"
    assert trigger().evaluate(Signals(new_rows=900, window="c")).action == "triggered"


def test_without_a_read_token_a_run_is_presumed_running_until_max_run_hours(
    fake_http: FakeHTTP, tmp_path: Path
) -> None:
    fake_http.routes[GITLAB_TRIGGER] = lambda r: (201, {"id": 1, "web_url": ""})
    clock, state = FakeClock(), tmp_path / "state.json"
    retrain = params(cooldown_hours=0.0, max_run_hours=12.0)

    def evaluate(window: str) -> str:
        backend = GitLabBackend(f"{fake_http.url}/api/v4", "mlops/gitops", "t")
        trigger = Trigger(StateStore(state), backend, retrain, clock=clock)
        return trigger.evaluate(Signals(drift=True, window=window)).action

    assert evaluate("a") == "triggered"
    clock.advance(hours=11.9)
    assert evaluate("b") == "skipped"
    clock.advance(hours=0.2)
    assert evaluate("c") == "triggered"
    assert not fake_http.calls("GET", "/api/v4/projects/mlops%2Fgitops/pipelines/1")


@pytest.mark.parametrize(
    ("status", "body", "fragment"),
    [
        (403, {"message": "403 Forbidden"}, "HTTP 403"),
        (200, None, "expected a JSON object"),
        (201, {"status": "created"}, "no pipeline id"),
    ],
    ids=["forbidden", "null", "no-id"],
)
def test_backend_failures_name_the_endpoint_and_record_no_run(
    fake_http: FakeHTTP, tmp_path: Path, status: int, body: Any, fragment: str
) -> None:
    fake_http.routes[GITLAB_TRIGGER] = lambda r: (status, body)
    backend = GitLabBackend(f"{fake_http.url}/api/v4", "mlops/gitops", "t")
    trigger = Trigger(StateStore(tmp_path / "s.json"), backend, params(), clock=FakeClock())
    with pytest.raises(TriggerError, match="GitLab trigger at .*mlops%2Fgitops") as error:
        trigger.evaluate(Signals(drift=True))
    assert fragment in str(error.value)
    # refused outright: nothing started, so no run and no used key (the next run may retry)
    state = StateStore(tmp_path / "s.json").load()
    assert state.last_run is None and state.recent_keys == []


def test_unreachable_backends_raise_trigger_errors(tmp_path: Path) -> None:
    dead = "http://127.0.0.1:9"  # discard port: connection refused
    argo = ArgoBackend(dead, "ns", "t", "p")
    with pytest.raises(TriggerError, match="Argo workflow list"):
        argo.running(None)
    with pytest.raises(TriggerError, match="Argo submit"):
        argo.submit(["drift"], "k", 0.0)
    gitlab = GitLabBackend(f"{dead}/api/v4", "1", "t", read_token="r")
    with pytest.raises(TriggerError, match="GitLab trigger"):
        gitlab.submit(["drift"], "k", 0.0)
    run = Run("gitlab", "5", "", 0.0, ("drift",), "k")
    with pytest.raises(TriggerError, match="GitLab pipeline status"):
        gitlab.running(run)
    assert gitlab.running(None) is False
    assert gitlab.running(Run("argo", "x", "", 0.0, (), "k")) is False


def test_concurrent_jobs_on_one_state_file_trigger_once(tmp_path: Path) -> None:
    submitted: list[str] = []
    lock = threading.Lock()

    class CountingBackend:
        name = "count"

        def submit(self, reasons: list[str], key: str, now: float) -> Run:
            with lock:
                submitted.append(key)
            return Run(self.name, str(len(submitted)), "", now, tuple(reasons), key)

        def running(self, last: Run | None) -> bool | None:
            return None

    def job(window: str) -> None:
        trigger = Trigger(StateStore(tmp_path / "s.json"), CountingBackend(), params())
        trigger.evaluate(Signals(drift=True, window=window))

    threads = [threading.Thread(target=job, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(submitted) == 1


def test_a_corrupt_state_file_stops_the_trigger(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    trigger = Trigger(StateStore(state), None, params(), dry_run=True)
    with pytest.raises(TriggerError, match="unreadable trigger state"):
        trigger.evaluate(Signals(drift=True))
    state.write_text(json.dumps({"version": 99}))
    with pytest.raises(TriggerError, match="version 1"):
        trigger.evaluate(Signals(drift=True))


def test_reasons_follow_the_thresholds_in_params() -> None:
    retrain = params()
    assert reasons_for(Signals(performance_drop=0.1), retrain) == []  # not above 10%
    assert reasons_for(Signals(performance_drop=0.11), retrain) == ["performance"]
    assert reasons_for(Signals(new_rows=499), retrain) == []
    assert reasons_for(Signals(new_rows=500, scheduled=True), retrain) == ["new_data", "schedule"]


def test_the_cli_keeps_its_cool_down_across_two_processes(
    fake_http: FakeHTTP, tmp_path: Path
) -> None:
    """A real restart: two `python -m ml.monitoring trigger` processes sharing the state file."""
    fake_http.routes[GITLAB_TRIGGER] = lambda r: (201, {"id": 9, "web_url": "u"})
    fake_http.routes["GET /api/v4/projects/mlops%2Fgitops/pipelines/9"] = lambda r: (
        200,
        {"status": "success"},
    )
    env = {"PATH": "/usr/bin:/bin", "GITLAB_TRIGGER_TOKEN": "t", "GITLAB_READ_TOKEN": "r"}

    def run(window: str) -> dict[str, Any]:
        argv = [
            sys.executable,
            "-m",
            "ml.monitoring",
            "trigger",
            *DIGITS_PARAMS,
            "--current-accuracy",
            "0.80",
            "--baseline-accuracy",
            "0.97",
            "--window",
            window,
            "--state",
            str(tmp_path / "state.json"),
            "--backend",
            "gitlab",
            "--gitlab-api",
            f"{fake_http.url}/api/v4",
            "--gitlab-project",
            "mlops/gitops",
        ]
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    first, second = run("day-1"), run("day-2")
    assert first["action"] == "triggered" and first["reasons"] == ["performance"]
    assert second["action"] == "skipped" and second["why"].startswith("cool-down")
    assert len(fake_http.calls("POST", "/api/v4/projects/mlops%2Fgitops/trigger/pipeline")) == 1
