"""The canary step driver on a fake clock and a scripted Prometheus: verdicts, timing, weights,
background analysis, manual gates, and the reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from rehearsal_fakes import ScriptedPrometheus, metric, template

from scripts.rehearsal.analysis import FakeClock, Phase, RehearsalUnsupported, scalar, vector
from scripts.rehearsal.canary import (
    CanaryRehearsal,
    Event,
    Outcome,
    RolloutSpecError,
    Verdict,
    field_path_value,
    RolloutArgs,
)
from scripts.rehearsal.prometheus import PrometheusQuery, ProviderError
from scripts.rehearsal.report import format_event, render_junit, render_markdown

REPO = Path(__file__).resolve().parents[2]
OK = vector(0.999)
BAD = vector(0.5)
MID = vector(0.97)

SUCCESS_RATE = template(
    metric(
        "success-rate",
        'rate{ns="{{args.namespace}}",hash="{{args.canary-hash}}"}',
        interval="1m",
        count=3,
        successCondition="len(result) > 0 && result[0] >= {{args.min}}",
        failureCondition="len(result) > 0 && result[0] < 0.95",
    ),
    name="success-rate",
    args=[{"name": "namespace"}, {"name": "canary-hash"}, {"name": "min", "value": "0.99"}],
)
ANALYSIS = {
    "templates": [{"templateName": "success-rate"}],
    "args": [
        {"name": "namespace", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
        {
            "name": "min",
            "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.annotations['example.com/success-rate-min']"}
            },
        },
    ],
}
QUERY = 'rate{ns="apps-dev",hash="c4n4ry"}'


def rollout(steps: list[Any], **canary: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {
            "name": "server",
            "namespace": "apps-dev",
            "annotations": {"example.com/success-rate-min": "0.99"},
        },
        # ten pods: a weight is then exactly its share of pods (replica_split, no routing)
        "spec": {"replicas": 10, "strategy": {"canary": {"steps": steps, **canary}}},
    }


STANDARD = [
    {"setWeight": 10},
    {"pause": {"duration": "2m"}},
    {"analysis": ANALYSIS},
    {"setWeight": 50},
    {"pause": {"duration": 300}},
    {"analysis": ANALYSIS},
    {"setWeight": 100},
]


def rehearse(
    clock: FakeClock,
    prometheus: ScriptedPrometheus,
    steps: list[Any] | None = None,
    templates: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> tuple[Any, list[int]]:
    weights: list[int] = []
    canary = kw.pop("canary", {})
    rehearsal = CanaryRehearsal(
        rollout(STANDARD if steps is None else steps, **canary),
        [SUCCESS_RATE] if templates is None else templates,
        prometheus,
        clock,
        time_factor=60,
        stable_hash="st4ble",
        canary_hash="c4n4ry",
        set_weight=weights.append,
        **kw,
    )
    return rehearsal.run(), weights


def test_healthy_canary_is_promoted(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [OK])
    result, weights = rehearse(clock, prometheus)
    assert result.verdict == Verdict(Outcome.PROMOTED)
    assert result.verdict.exit_code == 0
    assert weights == [0, 10, 50, 100]
    # args came from the Rollout: namespace and annotation (fieldRef), canary hash (Latest)
    assert {q for _, q in prometheus.calls} == {QUERY}
    # 2m pause -> 2 s, three measurements 1 s apart, 5m pause -> 5 s, three more
    start = 1000.0
    assert [t - start for t in prometheus.times()] == pytest.approx([2, 3, 4, 9, 10, 11])
    assert result.duration == pytest.approx(11)
    phases = [(r.label, r.run.phase) for r in result.runs]
    assert phases == [("step 2", Phase.SUCCESSFUL), ("step 5", Phase.SUCCESSFUL)]
    assert result.events[-1].kind == "verdict" and result.events[-1].text == "Promoted"


def test_failing_canary_is_aborted_at_the_first_analysis(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [BAD])
    result, weights = rehearse(clock, prometheus)
    verdict = result.verdict
    assert (verdict.outcome, verdict.step, verdict.metric) == (Outcome.ABORTED, 2, "success-rate")
    assert verdict.reason == "Failed: failed (1) > failureLimit (0)"
    assert verdict.exit_code == 1
    assert verdict.headline() == (
        "Aborted at step 2 (success-rate: Failed: failed (1) > failureLimit (0))"
    )
    assert weights == [0, 10, 0]  # traffic back to stable
    assert len(prometheus.calls) == 1


def test_inconclusive_pauses_the_rollout(clock: FakeClock) -> None:
    result, weights = rehearse(clock, ScriptedPrometheus(clock, [MID]))
    assert (result.verdict.outcome, result.verdict.step) == (Outcome.PAUSED, 2)
    assert result.verdict.exit_code == 2
    assert result.verdict.headline().startswith("Paused (inconclusive) at step 2 (success-rate:")
    assert weights == [0, 10]  # paused, not aborted: the canary keeps its traffic
    assert any("waiting for a human" in e.text for e in result.events)


def test_provider_errors_abort_once_consecutive_error_limit_is_exceeded(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [OK, ProviderError("connection refused")])
    result, weights = rehearse(clock, prometheus)
    assert result.verdict.outcome == Outcome.ABORTED
    assert result.verdict.reason.startswith("Error: consecutiveErrors (5) > consecutiveErrorLimit")
    # one success, then 5 errors retried every 10 s / 60
    offsets = [round(t - 1002.0, 3) for t in prometheus.times()]
    assert offsets == [0, 1, round(1 + 1 / 6, 3), round(1 + 2 / 6, 3), 1.5, round(1 + 4 / 6, 3)]
    assert weights[-1] == 0


def test_invalid_template_aborts_with_error(clock: FakeClock) -> None:
    broken = template(metric("success-rate", count=2), name="success-rate")
    result, _ = rehearse(clock, ScriptedPrometheus(clock, [OK]), templates=[broken])
    assert result.verdict.outcome == Outcome.ABORTED
    assert "interval must be specified when count > 1" in result.verdict.reason
    assert result.verdict.run == "step 2"


def test_every_failing_metric_is_named(clock: FakeClock) -> None:
    both = template(
        metric("a", QUERY, successCondition="result[0] >= 0.99"),
        metric("b", QUERY, successCondition="result[0] >= 0.99"),
        name="success-rate",
    )
    result, _ = rehearse(
        clock, ScriptedPrometheus(clock, [BAD]), steps=[{"analysis": ANALYSIS}], templates=[both]
    )
    verdict = result.verdict
    assert (verdict.metric, verdict.metrics) == ("a", ("a", "b"))
    assert verdict.headline() == (
        "Aborted at step 0 (a: Failed: failed (1) > failureLimit (0); "
        "b: Failed: failed (1) > failureLimit (0))"
    )


def test_manual_gate_is_passed_and_flagged_by_default(clock: FakeClock) -> None:
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]
    result, weights = rehearse(clock, ScriptedPrometheus(clock, [OK]), steps=steps)
    assert result.verdict == Verdict(Outcome.PROMOTED, gates_passed=(1,))
    assert result.verdict.headline() == ("Promoted (manual gate at step 1 passed by the rehearsal)")
    assert weights == [0, 20, 100]


def test_manual_gate_can_stop_the_rehearsal(clock: FakeClock) -> None:
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]
    result, weights = rehearse(
        clock, ScriptedPrometheus(clock, [OK]), steps=steps, manual_gates="stop"
    )
    assert result.verdict == Verdict(Outcome.PAUSED, 1, reason="manual gate")
    assert result.verdict.headline() == "Paused (manual gate) at step 1"
    assert result.verdict.exit_code == 2
    assert weights == [0, 20]


def test_background_analysis_starts_at_starting_step_and_aborts_during_a_pause(
    clock: FakeClock,
) -> None:
    background = dict(ANALYSIS, startingStep=1)
    steps = [{"setWeight": 10}, {"pause": {"duration": "10m"}}, {"setWeight": 100}]
    prometheus = ScriptedPrometheus(clock, [OK, BAD])
    result, weights = rehearse(
        clock,
        prometheus,
        steps=steps,
        templates=[
            template(
                metric("bg", QUERY, interval="1m", successCondition="result[0] >= 0.99"),
                name="success-rate",
            )
        ],
        canary={"analysis": background},
    )
    assert (result.verdict.outcome, result.verdict.step, result.verdict.run) == (
        Outcome.ABORTED,
        1,
        "background",
    )
    assert [t - 1000.0 for t in prometheus.times()] == [0, 1]  # runs during the 10 s pause
    assert weights == [0, 10, 0]


def test_background_analysis_is_terminated_at_promotion(clock: FakeClock) -> None:
    steps = [{"setWeight": 10}, {"pause": {"duration": "3m"}}, {"setWeight": 100}]
    result, weights = rehearse(
        clock,
        ScriptedPrometheus(clock, [OK]),
        steps=steps,
        templates=[
            template(
                metric("bg", QUERY, interval="1m", successCondition="result[0] >= 0.99"),
                name="success-rate",
            )
        ],
        canary={"analysis": ANALYSIS},
    )
    assert result.verdict.outcome == Outcome.PROMOTED
    (record,) = result.runs
    assert (record.label, record.run.phase, record.run.message) == (
        "background",
        Phase.SUCCESSFUL,
        "Run Terminated",
    )
    assert len(record.run.results["bg"].measurements) == 4  # t = 0, 1, 2, 3 s
    assert weights == [0, 10, 100]


def test_short_pauses_are_floored(clock: FakeClock) -> None:
    steps = [{"setWeight": 10}, {"pause": {"duration": "30s"}}, {"setWeight": 100}]
    result, _ = rehearse(clock, ScriptedPrometheus(clock, [OK]), steps=steps, min_pause_seconds=2)
    assert result.duration == 2.0
    assert any("pause 0.5 s raised to 2 s" in e.text for e in result.events)


def test_no_effect_steps_are_noted(clock: FakeClock) -> None:
    steps = [{"setCanaryScale": {"replicas": 1}}, {"setWeight": 100}]
    result, _ = rehearse(clock, ScriptedPrometheus(clock, [OK]), steps=steps)
    assert result.verdict.outcome == Outcome.PROMOTED
    assert any("setCanaryScale has no effect" in e.text for e in result.events)


def test_an_indefinite_inline_analysis_makes_the_rollout_invalid(clock: FakeClock) -> None:
    """The controller refuses a Rollout whose inline analysis could never end (v1.8
    validation): InvalidSpec, no canary, nothing measured."""
    forever = template(
        metric("m", QUERY, interval="1m", successCondition="result[0] >= 0.99"),
        name="success-rate",
    )
    prometheus = ScriptedPrometheus(clock, [OK])
    result, weights = rehearse(
        clock, prometheus, steps=[{"analysis": ANALYSIS}], templates=[forever], max_seconds=30
    )
    assert result.verdict.outcome == Outcome.INVALID
    assert "runs indefinitely" in result.verdict.reason
    assert result.verdict.exit_code == 4
    assert prometheus.calls == [] and weights == []


def test_an_unresolved_argument_makes_the_rollout_invalid(clock: FakeClock) -> None:
    unknown = template(
        metric("m", 'q{x="{{args.nowhere}}"}', successCondition="result[0] >= 0.99"),
        name="success-rate",
    )
    result, _ = rehearse(
        clock, ScriptedPrometheus(clock, [OK]), steps=[{"analysis": ANALYSIS}], templates=[unknown]
    )
    assert result.verdict.outcome == Outcome.INVALID
    assert "{{args.nowhere}}" in result.verdict.reason


def test_a_first_deploy_skips_every_step(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [BAD])
    result, weights = rehearse(clock, prometheus, first_deploy=True)
    assert result.verdict.outcome == Outcome.PROMOTED
    assert "first deploy" in result.verdict.headline()
    assert prometheus.calls == [] and result.runs == []


@pytest.mark.parametrize(
    ("steps", "error", "message"),
    [
        ([{"setWeight": 120}], RolloutSpecError, "setWeight must be an int"),
        ([{"setWeight": 10, "pause": {}}], RolloutSpecError, "exactly one step kind"),
        ([{"pause": {"duration": "soon"}}], RolloutSpecError, "invalid pause duration"),
        ([{"analysis": {"templates": []}}], RolloutSpecError, "without templates"),
        (
            [{"analysis": {"templates": [{"templateName": "nope"}]}}],
            RolloutSpecError,
            "AnalysisTemplate 'nope' is not in the rendered manifests",
        ),
        ([{"experiment": {}}], RehearsalUnsupported, "experiment steps"),
    ],
)
def test_rollouts_that_cannot_be_rehearsed(
    clock: FakeClock, steps: list[Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        rehearse(clock, ScriptedPrometheus(clock, [OK]), steps=steps)


def test_not_a_canary_rollout(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [OK])
    with pytest.raises(RolloutSpecError, match="expected a Rollout"):
        CanaryRehearsal({"kind": "Deployment"}, [], prometheus, clock)
    blue_green = {"kind": "Rollout", "spec": {"strategy": {"blueGreen": {}}}}
    with pytest.raises(RolloutSpecError, match="no canary strategy"):
        CanaryRehearsal(blue_green, [], prometheus, clock)


def test_cluster_scoped_templates_are_looked_up_by_kind(clock: FakeClock) -> None:
    cluster = dict(SUCCESS_RATE, kind="ClusterAnalysisTemplate")
    analysis = dict(ANALYSIS, templates=[{"templateName": "success-rate", "clusterScope": True}])
    result, _ = rehearse(
        clock,
        ScriptedPrometheus(clock, [OK]),
        steps=[{"setWeight": 10}, {"analysis": analysis}],
        templates=[cluster],
    )
    assert result.verdict.outcome == Outcome.PROMOTED


# --------------------------------------------------------------------------------------------
# valueFrom


def test_field_path_values() -> None:
    body = rollout([{"setWeight": 5}])
    body["metadata"]["labels"] = {"env": "dev"}
    assert field_path_value(body, "metadata.labels['env']") == "dev"
    assert field_path_value(body, "metadata.labels['missing']") == ""
    assert field_path_value(body, "metadata.name") == "server"
    assert field_path_value(body, "spec.strategy.canary.steps[0].setWeight") == "5"
    body["spec"]["paused"] = False
    assert field_path_value(body, "spec.paused") == "false"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("spec.strategy.canary.steps[3]", "index 3 out of range"),
        ("spec.strategy.canary.steps.x", "invalid index 'x'"),
        ("spec.nothing", "invalid path"),
        ("spec.strategy", "must terminate in a primitive value"),
        ("spec.strategy.canary.steps[0].setWeight.deeper", "invalid path"),
    ],
)
def test_field_path_errors(path: str, message: str) -> None:
    from scripts.rehearsal.analysis import AnalysisSpecError

    with pytest.raises(AnalysisSpecError, match=message):
        field_path_value(rollout([{"setWeight": 5}]), path)


def test_rollout_args_value_from_kinds() -> None:
    from scripts.rehearsal.analysis import AnalysisSpecError

    args = RolloutArgs(rollout([]), "st4ble", "c4n4ry")
    assert args("h", {"podTemplateHashValue": "Stable"}) == "st4ble"
    assert args("h", {"podTemplateHashValue": "Latest"}) == "c4n4ry"
    with pytest.raises(AnalysisSpecError, match="podTemplateHashValue 'Newest'"):
        args("h", {"podTemplateHashValue": "Newest"})
    with pytest.raises(RehearsalUnsupported, match="secretKeyRef"):
        args("s", {"secretKeyRef": {"name": "x", "key": "y"}})
    with pytest.raises(AnalysisSpecError, match="unsupported valueFrom"):
        args("s", {"configMapKeyRef": {}})


# --------------------------------------------------------------------------------------------
# The real templates and step profiles of this repo (so they cannot drift from the evaluator)


def _real_templates() -> list[dict[str, Any]]:
    return [
        yaml.safe_load(path.read_text())
        for path in sorted((REPO / "rollouts" / "analysis").glob("*.yaml"))
        if path.name != "kustomization.yaml"
    ]


def _real_rollout(profile: str) -> dict[str, Any]:
    patch = yaml.safe_load((REPO / "rollouts/strategies" / profile / "steps.yaml").read_text())
    steps = next(op["value"] for op in patch if op["path"] == "/spec/strategy/canary/steps")
    body = yaml.safe_load((REPO / "apps/_shared/model-service/rollout.yaml").read_text())
    body["metadata"]["namespace"] = "digits-classifier-dev"
    body["spec"]["strategy"]["canary"]["steps"] = steps
    return dict(body)


class ByFragment:
    """Answers each query of the real templates by a distinctive fragment of its PromQL."""

    def __init__(self, clock: FakeClock, success_rate: float) -> None:
        self.clock = clock
        self.success_rate = success_rate
        self.calls: list[tuple[float, str]] = []

    def __call__(self, request: PrometheusQuery) -> dict[str, Any]:
        self.calls.append((self.clock.now(), request.query))
        query = request.query
        if "clamp_min" in query:  # error rate minus max(2 x stable's, floor): below 0 is fine
            return vector(-0.02)
        if "1 - (" in query:  # error rate
            return vector(1 - self.success_rate)
        if "predicted_class" in query:  # class-mix distance to stable
            return vector(0.05)
        if "histogram_quantile" in query:  # p99 seconds, and canary/stable ratio
            return vector(0.01)
        if "inference_prediction_confidence" in query:  # confidence ratio to stable
            return vector(1.0)
        return vector(self.success_rate)


@pytest.mark.parametrize(
    ("profile", "success_rate", "outcome", "metric"),
    [
        ("canary-standard", 0.999, Outcome.PROMOTED, ""),
        ("canary-standard", 0.90, Outcome.ABORTED, "success-rate"),
        ("canary-fast", 0.999, Outcome.PROMOTED, ""),
        ("canary-gated", 0.999, Outcome.PROMOTED, ""),
    ],
)
def test_repo_templates_and_profiles(
    clock: FakeClock, profile: str, success_rate: float, outcome: Outcome, metric: str
) -> None:
    fake = ByFragment(clock, success_rate)
    result = CanaryRehearsal(
        _real_rollout(profile), _real_templates(), fake, clock, time_factor=60
    ).run()
    assert result.verdict.outcome == outcome, result.verdict.headline()
    assert result.verdict.metric == metric
    # every query filters on the canary's pod-template hash (podTemplateHashValue: Latest)
    assert all('rollouts_pod_template_hash="canary"' in q for _, q in fake.calls)
    assert all('namespace="digits-classifier-dev"' in q for _, q in fake.calls)


# --------------------------------------------------------------------------------------------
# Reports


def test_markdown_report(clock: FakeClock) -> None:
    result, _ = rehearse(clock, ScriptedPrometheus(clock, [BAD]))
    text = render_markdown(result)
    assert text.startswith("### Canary rehearsal: ❌ Aborted at step 2 (success-rate:")
    assert "Local stand-in for the Argo Rollouts controller" in text
    assert "| step 2 | success-rate | Failed |" in text
    assert "| 2.0 | 2 | 10% | step 2 | success-rate | [0.5] | Failed |" in text
    assert "(exit code 1)" in text
    assert "5m -> 5 s" in text


def test_junit_report(clock: FakeClock) -> None:
    result, _ = rehearse(clock, ScriptedPrometheus(clock, [BAD]))
    suite = ET.fromstring(render_junit(result))
    assert suite.get("tests") == "2" and suite.get("failures") == "2"
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    failure = cases[("rehearsal.step-2", "success-rate")].find("failure")
    assert failure is not None and failure.get("type") == "Failed"
    assert cases[("rehearsal", "verdict")].find("failure") is not None


def test_junit_report_promoted_and_invalid_run(clock: FakeClock) -> None:
    result, _ = rehearse(clock, ScriptedPrometheus(clock, [OK]))
    suite = ET.fromstring(render_junit(result))
    assert (suite.get("tests"), suite.get("failures")) == ("3", "0")
    broken = template(metric("success-rate", count=2), name="success-rate")
    result, _ = rehearse(clock, ScriptedPrometheus(clock, [OK]), templates=[broken])
    suite = ET.fromstring(render_junit(result))
    run_case = next(c for c in suite.iter("testcase") if c.get("name") == "analysis-run")
    assert run_case.find("failure") is not None


def test_event_formatting() -> None:
    event = Event(1.5, 2, 10, "note", "hello")
    assert format_event(event) == "[   1.50s] step  2 weight  10%  hello"
    assert "step  -" in format_event(Event(0, None, 0, "verdict", "Promoted"))


def test_scalar_results_work_end_to_end(clock: FakeClock) -> None:
    scalar_template = template(
        metric("s", QUERY, successCondition="result >= 0.99"), name="success-rate"
    )
    result, _ = rehearse(
        clock,
        ScriptedPrometheus(clock, [scalar(0.995)]),
        steps=[{"analysis": ANALYSIS}],
        templates=[scalar_template],
    )
    assert result.verdict.outcome == Outcome.PROMOTED


# --- v1.8 controller rules the stand-in follows (checked against the real controller in
# tests/cluster/test_rehearsal_matrix.py)


@pytest.mark.parametrize(
    ("replicas", "weight", "expected"),
    [
        (2, 10, (1, 2)),  # one canary pod beside two stable: a third of the requests
        (2, 50, (1, 1)),
        (4, 10, (1, 4)),
        (10, 10, (1, 9)),
        (3, 50, (2, 2)),  # 1.5 pods: a surge pod makes it exactly half
        (1, 50, (1, 1)),  # surge allowed: one more pod rather than 0 or 100%
        (2, 100, (2, 0)),
        (2, 0, (0, 2)),
    ],
)
def test_replica_split_without_traffic_routing(
    replicas: int, weight: int, expected: tuple[int, int]
) -> None:
    from scripts.rehearsal.canary import replica_split

    assert replica_split(replicas, weight, surge=1) == expected
