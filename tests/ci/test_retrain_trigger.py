"""The continuous-training path's calls against fake trigger endpoints (a scripted transport
under the real client: requests' adapter for python-gitlab, httpx.MockTransport for Jenkins; the
request is built and sent by the real client, the answer is scripted): a lost answer does not
submit a duplicate, a refused one may be retried, the Jenkins backend, and a drift run whose
trigger call fails still writes its report and metrics (issue 19 #7)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import numpy as np
import pytest
import requests
import requests.adapters

from ml.config import RetrainParams, load_params
from ml.monitoring.cli import main
from ml.monitoring.trigger import (
    GitLabBackend,
    JenkinsBackend,
    Signals,
    StateStore,
    SubmitOutcomeUnknown,
    Trigger,
    TriggerError,
)
from scripts.repo_copy import REPO
from tests.monitoring.conftest import write_digits_split

DIGITS = ["--params", str(REPO / "models/digits/params.yaml")]
DIGITS += ["--shared-params", str(REPO / "params.yaml")]


def retrain(**update: object) -> RetrainParams:
    params = load_params(REPO / "models/digits/params.yaml", REPO / "params.yaml")
    return params.monitoring.retrain.model_copy(update=update)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


Handler = Callable[[requests.PreparedRequest], requests.Response]


class ScriptedAdapter(requests.adapters.BaseAdapter):
    """requests' counterpart of httpx.MockTransport: every request the session sends goes to
    `handler`, which answers or raises."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        return self.handler(request)

    def close(self) -> None:
        pass


def answer(request: requests.PreparedRequest, status: int, body: Any) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers["content-type"] = "application/json"
    response.url, response.request = str(request.url), request
    return response


def gitlab(handler: Handler) -> GitLabBackend:
    session = requests.Session()
    session.mount("https://", ScriptedAdapter(handler))
    return GitLabBackend(
        "https://gitlab.test/api/v4", "mlops/gitops", "t", model="digits", session=session
    )


def test_a_lost_answer_is_never_submitted_twice(tmp_path: Path) -> None:
    """The pipeline was created, but the answer timed out: the next runs must not create a
    second one (the key and a pending run were recorded before the request went out)."""
    created: list[dict[str, Any]] = []

    def lose_the_answer(request: requests.PreparedRequest) -> requests.Response:
        created.append(json.loads(request.body or b"{}"))
        raise requests.ReadTimeout("timed out", request=request)

    clock, store = Clock(), StateStore(tmp_path / "state.json")
    trigger = Trigger(store, gitlab(lose_the_answer), retrain(cooldown_hours=0.0), clock=clock)
    with pytest.raises(SubmitOutcomeUnknown, match="may have been received"):
        trigger.evaluate(Signals(drift=True, model_version="3", window="w1"))
    assert created[0]["variables"]["RETRAIN_MODEL"] == "digits"
    again = trigger.evaluate(Signals(drift=True, model_version="3", window="w1"))
    assert again.action == "skipped" and again.why.startswith("duplicate")
    clock.now += 3600  # new data, same model: presumed in flight, not a second pipeline
    other = trigger.evaluate(Signals(drift=True, model_version="3", window="w2"))
    assert other.action == "skipped" and other.why.startswith("in flight")
    assert len(created) == 1
    history = json.loads((tmp_path / "state.json").read_text())["history"]
    assert history[0]["why"].startswith("submission outcome unknown")


def test_a_refused_submission_can_be_retried(tmp_path: Path) -> None:
    answers = [(500, {"message": "boom"}), (201, {"id": 9})]
    backend = gitlab(lambda request: answer(request, *answers.pop(0)))
    trigger = Trigger(StateStore(tmp_path / "s.json"), backend, retrain(), clock=Clock())
    with pytest.raises(TriggerError, match="HTTP 500"):
        trigger.evaluate(Signals(drift=True, window="w"))
    assert trigger.evaluate(Signals(drift=True, window="w")).action == "triggered"
    assert answers == []


def test_the_jenkins_backend_starts_a_parameterised_build_and_follows_it(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    building = {"value": True}

    def jenkins(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path == "/job/mlops/job/main/buildWithParameters":
            return httpx.Response(201, headers={"location": "https://ci.test/queue/item/42/"})
        if path == "/queue/item/42/api/json":
            return httpx.Response(200, json={"executable": {"url": "https://ci.test/job/b/7/"}})
        if path == "/job/b/7/api/json":
            return httpx.Response(200, json={"building": building["value"]})
        return httpx.Response(404)

    client = httpx.Client(transport=httpx.MockTransport(jenkins))
    backend = JenkinsBackend(
        client, "https://ci.test", "mlops/job/main", "bot", "api-token", "digits"
    )
    clock = Clock()
    trigger = Trigger(
        StateStore(tmp_path / "s.json"), backend, retrain(cooldown_hours=0.0), clock=clock
    )
    first = trigger.evaluate(Signals(drift=True, window="a"))
    assert first.action == "triggered" and first.run is not None
    assert first.run.id == "https://ci.test/queue/item/42/"
    form = parse_qs(seen[0].content.decode())
    assert form == {
        "RETRAIN": ["true"],
        "RETRAIN_REASON": ["drift"],
        "RETRAIN_KEY": [first.key],
        "RETRAIN_MODEL": ["digits"],
    }
    assert seen[0].headers["authorization"].startswith("Basic ")
    # the Jenkinsfile declares exactly these parameters (tests/ci/jenkins checks it runs them)
    for name in form:
        assert f"name: '{name}'" in (REPO / "Jenkinsfile").read_text()
    assert trigger.evaluate(Signals(drift=True, window="b")).why.startswith("in flight")
    building["value"] = False
    assert trigger.evaluate(Signals(drift=True, window="c")).action == "triggered"


def test_a_failed_trigger_call_keeps_the_drift_report_and_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_digits_split(tmp_path, live=lambda rows: np.clip(rows * 1.6 + 3, 0, 16))
    out = tmp_path / "out"
    argv = ["drift", *DIGITS, "--reference", str(tmp_path / "train.npz"), "--out", str(out)]
    argv += ["--sample", str(tmp_path / "live.npz"), "--trigger", "--backend", "gitlab"]
    argv += ["--gitlab-api", "http://127.0.0.1:9/api/v4", "--gitlab-project", "1"]
    argv += ["--state", str(tmp_path / "state.json")]
    assert main(argv, env={"GITLAB_TRIGGER_TOKEN": "t"}) == 1
    captured = capsys.readouterr()
    assert "GitLab trigger at" in captured.err and "DRIFT" in captured.out
    report = json.loads((out / "drift.json").read_text())
    assert report["drift"]["detected"] is True
    assert report["retrain"]["action"] == "error" and "GitLab trigger" in report["retrain"]["why"]
    assert "drift" in (out / "drift.prom").read_text()


def test_a_server_that_never_answers_does_not_hang_the_trigger(tmp_path: Path) -> None:
    """hera's WorkflowsService passes no timeout of its own: the backend's session does."""
    import socket
    import time

    from ml.monitoring.trigger import ArgoBackend, TimeoutSession

    with socket.socket() as listener:  # accepts (the kernel's backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        backend = ArgoBackend(url, "ns", "t", "p", session=TimeoutSession(read_s=0.5))
        started = time.monotonic()
        with pytest.raises(SubmitOutcomeUnknown, match="Argo submit"):
            backend.submit(["drift"], "k", 0.0)
        assert time.monotonic() - started < 5
