"""The Python rehearsal (scripts/rehearsal) against the real Argo Rollouts controller.

Every scenario is a Rollout and its AnalysisTemplates whose metrics are PromQL constants
(`vector(0.5)`, an empty vector, NaN), so both engines measure the same values from the same
real Prometheus: the controller through its own provider during a real canary on the local
cluster, the rehearsal through its client on a fake clock. They must reach the same verdict
category (and, when the canary stops, at the same step). The scenarios cover the rules the
stand-in once got wrong: counts without a consecutive-success streak, nested templates,
first deploys, InvalidSpec, plus the usual limits, NaN, errors, dry-run, background analysis
and manual gates. All run at once, one namespace each.
"""

from __future__ import annotations

import copy
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scripts.cluster.__main__ import images_dir, platform_address
from scripts.cluster.canary import Canary, CanaryResult, Options
from scripts.cluster.control_plane import Layout
from scripts.cluster.images import build_image
from scripts.rehearsal.analysis import FakeClock
from scripts.rehearsal.canary import CanaryRehearsal, Outcome, RehearsalResult
from scripts.rehearsal.prometheus import PrometheusClient

pytestmark = pytest.mark.e2e

STUB = Path(__file__).with_name("stub") / "Dockerfile"
PROMETHEUS = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
PASS, FAIL, BETWEEN = "vector(0.999)", "vector(0.5)", "vector(0.97)"
EMPTY, NAN = "vector(1) > 2", "vector(0) / 0"
SUCCESS, FAILURE = "result[0] >= 0.99", "result[0] < 0.95"


def metric(name: str, query: str, **fields: Any) -> dict[str, Any]:
    body = {"name": name, "interval": "1s", "count": 2, "provider": {}}
    body.update(fields)
    body["provider"] = {"prometheus": {"address": PROMETHEUS, "query": query}}
    return body


def template(name: str, *metrics: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {"metrics": list(metrics), **spec},
    }


def analysis(*names: str, **extra: Any) -> dict[str, Any]:
    return {"analysis": {"templates": [{"templateName": n} for n in names], **extra}}


STEPS = [{"setWeight": 50}, {"pause": {"duration": "1s"}}, analysis("a"), {"setWeight": 100}]


@dataclass
class Scenario:
    name: str
    templates: list[dict[str, Any]]
    expected: Outcome
    steps: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(STEPS))
    background: dict[str, Any] | None = None
    first_deploy: bool = False
    manual_gates: str = "pass"


SCENARIOS = [
    Scenario(
        "pass", [template("a", metric("m", PASS, successCondition=SUCCESS))], Outcome.PROMOTED
    ),
    Scenario(
        "fail",
        [template("a", metric("m", FAIL, successCondition=SUCCESS, failureCondition=FAILURE))],
        Outcome.ABORTED,
    ),
    Scenario(
        "failures-under-limit",
        [template("a", metric("m", FAIL, failureCondition=FAILURE, count=3, failureLimit=3))],
        Outcome.PROMOTED,
    ),
    Scenario(
        "inconclusive",
        [template("a", metric("m", BETWEEN, successCondition=SUCCESS, failureCondition=FAILURE))],
        Outcome.PAUSED,
    ),
    Scenario(
        "empty-result-errors",
        [template("a", metric("m", EMPTY, successCondition=SUCCESS, consecutiveErrorLimit=0))],
        Outcome.ABORTED,
    ),
    Scenario(
        "nan-only-success-condition",
        [template("a", metric("m", NAN, successCondition=SUCCESS))],
        Outcome.ABORTED,
    ),
    Scenario("no-conditions", [template("a", metric("m", FAIL))], Outcome.PROMOTED),
    Scenario(
        "streak-reached",
        [
            template(
                "a", metric("m", PASS, successCondition=SUCCESS, count=4, consecutiveSuccessLimit=2)
            )
        ],
        Outcome.PROMOTED,
    ),
    Scenario(
        "count-without-streak",
        [
            template(
                "a",
                metric(
                    "m",
                    FAIL,
                    successCondition=SUCCESS,
                    count=3,
                    failureLimit=3,
                    consecutiveSuccessLimit=2,
                ),
            )
        ],
        Outcome.PAUSED,
    ),
    Scenario(
        "count-without-streak-no-failure-limit",
        [
            template(
                "a",
                metric(
                    "m",
                    FAIL,
                    successCondition=SUCCESS,
                    count=3,
                    failureLimit=-1,
                    consecutiveSuccessLimit=2,
                ),
            )
        ],
        Outcome.ABORTED,
    ),
    Scenario(
        "dry-run-failure",
        [
            template(
                "a",
                metric("ok", PASS, successCondition=SUCCESS),
                metric("bad", FAIL, successCondition=SUCCESS),
                dryRun=[{"metricName": "bad"}],
            )
        ],
        Outcome.PROMOTED,
    ),
    Scenario(
        "nested-template-fails",
        [
            template(
                "a", metric("ok", PASS, successCondition=SUCCESS), templates=[{"templateName": "b"}]
            ),
            template("b", metric("bad", FAIL, successCondition=SUCCESS)),
        ],
        Outcome.ABORTED,
    ),
    Scenario(
        "unresolved-argument",
        [
            template(
                "a",
                metric("m", "vector({{args.threshold}})", successCondition=SUCCESS),
                args=[{"name": "threshold"}],
            )
        ],
        Outcome.INVALID,
    ),
    Scenario(
        "inline-metric-without-end",
        [template("a", metric("m", PASS, successCondition=SUCCESS, count=0))],
        Outcome.INVALID,
    ),
    Scenario(
        "first-deploy",
        [template("a", metric("m", FAIL, successCondition=SUCCESS))],
        Outcome.PROMOTED,
        first_deploy=True,
    ),
    Scenario(
        "background-fails",
        [
            template("a", metric("m", PASS, successCondition=SUCCESS)),
            template("bg", metric("m", FAIL, successCondition=SUCCESS, count=3)),
        ],
        Outcome.ABORTED,
        steps=[{"setWeight": 50}, {"pause": {"duration": "10s"}}, {"setWeight": 100}],
        background={"templates": [{"templateName": "bg"}], "startingStep": 1},
    ),
    Scenario(
        "manual-gate",
        [template("a", metric("m", PASS, successCondition=SUCCESS))],
        Outcome.PAUSED,
        steps=[{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}],
        manual_gates="stop",
    ),
]


def manifests(scenario: Scenario) -> list[dict[str, Any]]:
    canary: dict[str, Any] = {"steps": scenario.steps}
    if scenario.background is not None:
        canary["analysis"] = scenario.background
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "stub"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "stub"}},
            "strategy": {"canary": canary},
            "template": {
                "metadata": {"labels": {"app": "stub"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "stub",
                            "image": "stub:stable",
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }
    return [rollout, *copy.deepcopy(scenario.templates)]


def rehearse(scenario: Scenario, prometheus: str) -> RehearsalResult:
    objects = manifests(scenario)
    rollout = {**objects[0], "metadata": {"name": "stub", "namespace": "matrix"}}
    return CanaryRehearsal(
        rollout,
        objects[1:],
        PrometheusClient(address_override=prometheus),
        FakeClock(),
        time_factor=1,
        first_deploy=scenario.first_deploy,
        manual_gates="stop" if scenario.manual_gates == "stop" else "pass",
        max_seconds=300,
    ).run()


@pytest.fixture(scope="module")
def verdicts(cluster: Layout) -> dict[str, tuple[RehearsalResult, CanaryResult]]:
    store = images_dir(cluster)
    refs = {}
    for role in ("stable", "candidate"):
        ref = f"matrix-stub:{role}"
        build_image(STUB, STUB.parent, ref, store, extra_env={"STUB_ROLE": role})
        refs[role] = ref
    prometheus = f"http://{platform_address(cluster, 0)}:9090"
    run_id = hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:5]

    def judge(scenario: Scenario) -> tuple[RehearsalResult, CanaryResult]:
        options = Options(
            overlay=Path("."),
            candidate_model=Path("."),
            rps=0,
            warmup=0,
            timeout=240,
            first_deploy_only=scenario.first_deploy,
            manual_gates=scenario.manual_gates,
        )
        real = Canary(options, say=lambda *args, **kwargs: None).judge(
            manifests(scenario),
            f"matrix-{scenario.name}-{run_id}",
            refs["stable"],
            refs["candidate"],
        )
        return rehearse(scenario, prometheus), real

    with ThreadPoolExecutor(len(SCENARIOS)) as pool:
        return dict(zip((s.name for s in SCENARIOS), pool.map(judge, SCENARIOS)))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_the_rehearsal_reaches_the_controllers_verdict(
    scenario: Scenario, verdicts: dict[str, tuple[RehearsalResult, CanaryResult]]
) -> None:
    rehearsal, real = verdicts[scenario.name]
    assert real.verdict.outcome == scenario.expected, real.verdict.headline()
    assert (
        rehearsal.verdict.outcome == real.verdict.outcome
    ), f"rehearsal: {rehearsal.verdict.headline()}; controller: {real.verdict.headline()}"
    if real.verdict.outcome in (Outcome.ABORTED, Outcome.PAUSED) and not scenario.background:
        assert rehearsal.verdict.step == real.verdict.step
