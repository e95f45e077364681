"""Argo Rollouts analysis semantics, one test (or table row) per rule in REFERENCE.md."""

from __future__ import annotations

import math
from typing import Any

import pytest
from rehearsal_fakes import ScriptedPrometheus, metric, template

from scripts.rehearsal.analysis import (
    AnalysisRun,
    AnalysisSpecError,
    FakeClock,
    MetricResult,
    MetricSpec,
    Phase,
    RehearsalUnsupported,
    assess_metric,
    build_metric,
    int_or_string,
    measurement_phase,
    merge_args,
    parse_duration,
    pause_seconds,
    resolve_template_string,
    run_phase,
    run_spec_from_templates,
    run_to_completion,
    scalar,
    vector,
    worst,
)
from scripts.rehearsal.expr import UnsupportedExpression, Value
from scripts.rehearsal.prometheus import ProviderError

OK = vector(0.999)
BAD = vector(0.5)
MID = vector(0.97)
ERR = ProviderError("server error: HTTP 503")


def make_run(
    clock: FakeClock,
    prometheus: ScriptedPrometheus,
    *metrics: dict[str, Any],
    args: list[dict[str, Any]] | None = None,
    time_factor: float = 1.0,
    **spec: Any,
) -> AnalysisRun:
    try:
        run_spec = run_spec_from_templates([template(*metrics, **spec)], args or [])
    except AnalysisSpecError as exc:
        return AnalysisRun("run", exc, prometheus, clock, time_factor)
    return AnalysisRun("run", run_spec, prometheus, clock, time_factor)


def drive(
    clock: FakeClock, prometheus: ScriptedPrometheus, *metrics: dict[str, Any], **kw: Any
) -> AnalysisRun:
    run = make_run(clock, prometheus, *metrics, **kw)
    run_to_completion(run, clock, deadline=clock.now() + 3600)
    return run


# --------------------------------------------------------------------------------------------
# One measurement's phase


SUCCESS = "result[0] >= 0.99"
FAILURE = "result[0] < 0.95"

MEASUREMENT_ROWS: list[tuple[str, str, str, Value, Phase]] = [
    # both conditions
    ("both: failure true -> Failed", SUCCESS, FAILURE, [0.5], Phase.FAILED),
    ("both: failure wins even if success true", "result[0] >= 0", FAILURE, [0.5], Phase.FAILED),
    ("both: success true -> Successful", SUCCESS, FAILURE, [0.999], Phase.SUCCESSFUL),
    ("both: neither true -> Inconclusive", SUCCESS, FAILURE, [0.97], Phase.INCONCLUSIVE),
    # only one condition
    ("only success: true -> Successful", SUCCESS, "", [0.999], Phase.SUCCESSFUL),
    ("only success: false -> Failed", SUCCESS, "", [0.97], Phase.FAILED),
    ("only failure: true -> Failed", "", FAILURE, [0.5], Phase.FAILED),
    ("only failure: false -> Successful", "", FAILURE, [0.97], Phase.SUCCESSFUL),
    # neither: the code says Successful (the docs say Inconclusive)
    ("neither -> Successful", "", "", [0.0], Phase.SUCCESSFUL),
    # evaluation failures -> Error
    ("empty vector result[0] -> Error", SUCCESS, "", [], Phase.ERROR),
    ("non-bool -> Error", "result[0]", "", [0.5], Phase.ERROR),
    ("runtime error in failure -> Error", SUCCESS, "result[3] > 1", [0.999], Phase.ERROR),
    ("malformed condition -> Error", "result[0] >=", "", [0.999], Phase.ERROR),
    # NaN (0/0 with no traffic): every ordered comparison false
    ("NaN, only success -> Failed", SUCCESS, "", [math.nan], Phase.FAILED),
    ("NaN, both -> Inconclusive", SUCCESS, FAILURE, [math.nan], Phase.INCONCLUSIVE),
    ("NaN, only failure -> Successful", "", FAILURE, [math.nan], Phase.SUCCESSFUL),
    ("no-data guard", "len(result) > 0 && result[0] >= 0.99", "", [], Phase.FAILED),
]


@pytest.mark.parametrize(
    ("rule", "success", "failure", "result", "expected"),
    MEASUREMENT_ROWS,
    ids=[row[0] for row in MEASUREMENT_ROWS],
)
def test_measurement_phase(
    rule: str, success: str, failure: str, result: Value, expected: Phase
) -> None:
    spec = MetricSpec(
        name="m", provider=None, provider_error=None,
        success_condition=success, failure_condition=failure,
    )  # fmt: skip
    phase, message = measurement_phase(spec, result)
    assert phase == expected, rule
    assert bool(message) == (expected == Phase.ERROR)


def test_unsupported_condition_stops_the_rehearsal(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [OK])
    spec = run_spec_from_templates([template(metric(successCondition="abs(result[0]) < 1"))])
    with pytest.raises(UnsupportedExpression, match="function 'abs'"):
        AnalysisRun("run", spec, prometheus, clock)


# --------------------------------------------------------------------------------------------
# Provider answers: what `result` is


SHAPE_ROWS: list[tuple[str, dict[str, Any], Phase, str]] = [
    ("scalar -> float", scalar(0.999), Phase.SUCCESSFUL, "0.999"),
    ("vector -> list in order", vector(0.999, 0.1), Phase.SUCCESSFUL, "[0.999,0.1]"),
    ("empty vector -> Error", vector(), Phase.ERROR, "[]"),
    (
        "matrix -> flattened",
        {
            "resultType": "matrix",
            "result": [
                {"metric": {}, "values": [[1, "0.1"], [2, "0.2"]]},
                {"metric": {}, "values": [[1, "0.3"]]},
            ],
        },
        Phase.SUCCESSFUL,
        "[0.1,0.2,0.3]",
    ),
    ("string -> Error", {"resultType": "string", "result": [0, "x"]}, Phase.ERROR, ""),
    ("NaN sample", vector(math.nan), Phase.SUCCESSFUL, "[NaN]"),
]


@pytest.mark.parametrize(
    ("rule", "data", "expected", "value"), SHAPE_ROWS, ids=[row[0] for row in SHAPE_ROWS]
)
def test_prometheus_result_shapes(
    clock: FakeClock, rule: str, data: dict[str, Any], expected: Phase, value: str
) -> None:
    condition = {
        "scalar -> float": "result >= 0.99",
        "matrix -> flattened": "len(result) == 3 && result[2] == 0.3",
        "NaN sample": "isNaN(result[0])",
    }.get(rule, "result[0] >= 0.99")
    run = drive(clock, ScriptedPrometheus(clock, [data]), metric(successCondition=condition))
    measurement = run.results["success-rate"].measurements[0]
    assert measurement.phase == expected, rule
    assert measurement.value == value


def test_provider_failure_is_error_not_failed(clock: FakeClock) -> None:
    run = make_run(clock, ScriptedPrometheus(clock, [ERR]), metric(successCondition=SUCCESS))
    run.reconcile()
    measurement = run.results["success-rate"].measurements[0]
    assert measurement.phase == Phase.ERROR
    assert "HTTP 503" in measurement.message
    assert run.results["success-rate"].failed == 0


# --------------------------------------------------------------------------------------------
# Metric fields, defaults and scheduling


def test_interval_counts_from_previous_finish(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [OK], latency=2.0)
    start = clock.now()
    drive(clock, prometheus, metric(successCondition=SUCCESS, interval="10s", count=3))
    assert [t - start for t in prometheus.times()] == [0.0, 12.0, 24.0]


def test_initial_delay_counts_from_run_start_and_metric_is_pending(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [OK])
    start = clock.now()
    run = make_run(clock, prometheus, metric(successCondition=SUCCESS, initialDelay="30s"))
    run.reconcile()
    assert run.metric_phase("success-rate") == Phase.PENDING
    assert run.phase == Phase.RUNNING
    assert run.next_reconcile_at() == start + 30
    assert run_to_completion(run, clock) == Phase.SUCCESSFUL
    assert prometheus.times() == [start + 30]


@pytest.mark.parametrize(
    ("fields", "measurements", "phase"),
    [
        ({}, 1, Phase.SUCCESSFUL),  # count unset, no interval -> one measurement
        ({"count": 0}, 1, Phase.SUCCESSFUL),
        ({"count": 3, "interval": "5s"}, 3, Phase.SUCCESSFUL),
        ({"count": "3", "interval": "5s"}, 3, Phase.SUCCESSFUL),  # IntOrString
    ],
)
def test_count_defaults(
    clock: FakeClock, fields: dict[str, Any], measurements: int, phase: Phase
) -> None:
    prometheus = ScriptedPrometheus(clock, [OK])
    run = drive(clock, prometheus, metric(successCondition=SUCCESS, **fields))
    assert len(prometheus.calls) == measurements
    assert run.phase == phase


def test_interval_without_count_runs_until_the_run_ends(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [OK])
    run = make_run(clock, prometheus, metric(successCondition=SUCCESS, interval="10s"))
    run_to_completion(run, clock, deadline=clock.now() + 95)
    assert len(prometheus.calls) == 10
    assert run.phase == Phase.RUNNING
    run.terminate()
    assert (run.phase.value, run.message) == ("Successful", "Run Terminated")
    assert run.next_reconcile_at() is None


def test_failure_limit_zero_fails_on_first_failure(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [BAD, OK])
    run = drive(clock, prometheus, metric(successCondition=SUCCESS, interval="5s", count=5))
    assert run.phase == Phase.FAILED
    assert len(prometheus.calls) == 1
    assert run.message.startswith('Metric "success-rate" assessed Failed due to failed (1)')


def test_failure_limit_tolerates_failures_and_count_still_succeeds(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [BAD, BAD, BAD, OK])
    run = drive(
        clock,
        prometheus,
        metric(successCondition=SUCCESS, interval="5s", count=5, failureLimit=3),
    )
    # count reached -> Successful even with failures under the limit
    assert run.phase == Phase.SUCCESSFUL
    assert run.results["success-rate"].failed == 3


def test_failure_limit_exceeded(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [BAD])
    run = drive(
        clock, prometheus, metric(successCondition=SUCCESS, interval="5s", count=5, failureLimit=3)
    )
    assert run.phase == Phase.FAILED
    assert len(prometheus.calls) == 4


def test_failure_limit_minus_one_with_consecutive_successes(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [BAD, BAD, BAD, OK, BAD, OK, OK])
    run = drive(
        clock,
        prometheus,
        metric(successCondition=SUCCESS, interval="5s", failureLimit=-1, consecutiveSuccessLimit=2),
    )
    assert run.phase == Phase.SUCCESSFUL
    assert len(prometheus.calls) == 7
    assert "consecutiveSuccesses (2)" in run.results["success-rate"].message


def test_consecutive_success_limit_ends_early(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [OK])
    run = drive(
        clock,
        prometheus,
        metric(successCondition=SUCCESS, interval="5s", count=10, consecutiveSuccessLimit=3),
    )
    assert run.phase == Phase.SUCCESSFUL
    assert len(prometheus.calls) == 3


def test_inconclusive_limit_zero(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [MID])
    run = drive(
        clock,
        prometheus,
        metric(successCondition=SUCCESS, failureCondition=FAILURE, interval="5s", count=3),
    )
    assert run.phase == Phase.INCONCLUSIVE
    assert len(prometheus.calls) == 1


def test_inconclusive_limit_tolerates(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [MID, MID, OK])
    run = drive(
        clock,
        prometheus,
        metric(
            successCondition=SUCCESS,
            failureCondition=FAILURE,
            interval="5s",
            count=3,
            inconclusiveLimit=2,
        ),
    )
    assert run.phase == Phase.SUCCESSFUL


def test_consecutive_error_limit_default_four(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [ERR])
    start = clock.now()
    run = drive(clock, prometheus, metric(successCondition=SUCCESS, interval="60s", count=3))
    assert run.phase == Phase.ERROR
    # Error on the 5th error in a row, each retried 10 s later whatever the interval.
    assert [t - start for t in prometheus.times()] == [0, 10, 20, 30, 40]
    assert "consecutiveErrors (5) > consecutiveErrorLimit (4)" in run.message
    assert "HTTP 503" in run.message


def test_consecutive_error_limit_custom(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [ERR])
    run = drive(
        clock, prometheus, metric(successCondition=SUCCESS, consecutiveErrorLimit=1, count=1)
    )
    assert run.phase == Phase.ERROR
    assert len(prometheus.calls) == 2


def test_errors_do_not_count_toward_count_and_reset_on_success(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [ERR, ERR, OK, ERR, OK])
    start = clock.now()
    run = drive(clock, prometheus, metric(successCondition=SUCCESS, interval="30s", count=2))
    assert run.phase == Phase.SUCCESSFUL
    result = run.results["success-rate"]
    assert (result.count, result.error, result.consecutive_error) == (2, 3, 0)
    # errors retry after 10 s; after a success the 30 s interval applies again
    assert [t - start for t in prometheus.times()] == [0, 10, 20, 50, 60]


def test_time_factor_scales_every_duration(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, [ERR, OK])
    start = clock.now()
    drive(
        clock,
        prometheus,
        metric(successCondition=SUCCESS, interval="5m", count=2, initialDelay="1m"),
        time_factor=60.0,
    )
    # initialDelay 1m -> 1 s; error retry 10 s -> 1/6 s; interval 5m -> 5 s
    assert [t - start for t in prometheus.times()] == pytest.approx([1, 1 + 1 / 6, 6 + 1 / 6])


# --------------------------------------------------------------------------------------------
# Metric phase precedence (pure)


def _result(**counters: int) -> MetricResult:
    from scripts.rehearsal.analysis import Measurement

    result = MetricResult("m")
    result.measurements.append(Measurement("m", Phase.SUCCESSFUL, 0, 0))
    for key, value in counters.items():
        setattr(result, key, value)
    return result


PRECEDENCE_ROWS: list[tuple[str, dict[str, int], dict[str, Any], Phase]] = [
    ("failed > failureLimit -> Failed", {"failed": 1, "count": 1}, {}, Phase.FAILED),
    ("failed == limit -> Running", {"failed": 2, "count": 2}, {"failure_limit": 2, "interval": 1.0},
     Phase.RUNNING),  # fmt: skip
    ("inconclusive > limit", {"inconclusive": 1, "count": 1}, {}, Phase.INCONCLUSIVE),
    (
        "inconclusive overrides failed",
        {"failed": 1, "inconclusive": 1, "count": 2},
        {},
        Phase.INCONCLUSIVE,
    ),
    ("errors > limit -> Error", {"consecutive_error": 5, "error": 5}, {}, Phase.ERROR),
    ("errors == limit -> Running", {"consecutive_error": 4, "error": 4}, {}, Phase.RUNNING),
    (
        "error overrides failed and inconclusive",
        {"failed": 1, "inconclusive": 1, "consecutive_error": 5, "count": 2},
        {},
        Phase.ERROR,
    ),
    (
        "consecutive successes -> Successful",
        {"consecutive_success": 3, "count": 3, "successful": 3},
        {"consecutive_success_limit": 3},
        Phase.SUCCESSFUL,
    ),
    (
        "failure beats consecutive successes",
        {"failed": 1, "consecutive_success": 3, "count": 4},
        {"consecutive_success_limit": 3},
        Phase.FAILED,
    ),
    (
        "count reached with failures under limit",
        {"failed": 1, "count": 3},
        {"count": 3, "interval": 1.0, "failure_limit": 1},
        Phase.SUCCESSFUL,
    ),
    # v1.8: a count reached without the consecutiveSuccessLimit streak is no success
    (
        "count reached without the streak, failureLimit >= 0 -> Inconclusive",
        {"failed": 1, "successful": 2, "consecutive_success": 1, "count": 3},
        {"count": 3, "interval": 1.0, "failure_limit": 1, "consecutive_success_limit": 2},
        Phase.INCONCLUSIVE,
    ),
    (
        "count reached without the streak, failureLimit -1 -> Failed",
        {"failed": 2, "successful": 1, "consecutive_success": 1, "count": 3},
        {"count": 3, "interval": 1.0, "failure_limit": -1, "consecutive_success_limit": 2},
        Phase.FAILED,
    ),
    ("count not reached -> Running", {"count": 2}, {"count": 3, "interval": 1.0}, Phase.RUNNING),
    ("indefinite -> Running", {"count": 9}, {"interval": 1.0}, Phase.RUNNING),
    ("failureLimit -1 ignores failures", {"failed": 9, "count": 9}, {"failure_limit": -1,
     "interval": 1.0, "consecutive_success_limit": 2}, Phase.RUNNING),  # fmt: skip
]


@pytest.mark.parametrize(
    ("rule", "counters", "spec", "expected"),
    PRECEDENCE_ROWS,
    ids=[row[0] for row in PRECEDENCE_ROWS],
)
def test_metric_phase_precedence(
    rule: str, counters: dict[str, int], spec: dict[str, Any], expected: Phase
) -> None:
    metric_spec = MetricSpec(name="m", provider=None, provider_error=None, **spec)
    assert assess_metric(metric_spec, _result(**counters), terminating=False)[0] == expected


def test_metric_without_measurements_is_pending_or_successful_when_terminating() -> None:
    spec = MetricSpec(name="m", provider=None, provider_error=None)
    assert assess_metric(spec, MetricResult("m"), terminating=False)[0] == Phase.PENDING
    assert assess_metric(spec, MetricResult("m"), terminating=True)[0] == Phase.SUCCESSFUL


# --------------------------------------------------------------------------------------------
# Run phase


def test_phase_order() -> None:
    order = [
        Phase.SUCCESSFUL,
        Phase.RUNNING,
        Phase.PENDING,
        Phase.INCONCLUSIVE,
        Phase.ERROR,
        Phase.FAILED,
    ]
    for i, better in enumerate(order):
        for worse in order[i:]:
            assert worst(better, worse) == worse
            assert worst(worse, better) == worse


RUN_ROWS: list[tuple[str, list[tuple[Phase, bool]], bool, Phase]] = [
    ("all successful", [(Phase.SUCCESSFUL, False)] * 2, False, Phase.SUCCESSFUL),
    ("one still running", [(Phase.SUCCESSFUL, False), (Phase.RUNNING, False)], False,
     Phase.RUNNING),
    ("pending keeps it running", [(Phase.PENDING, False), (Phase.FAILED, False)], False,
     Phase.RUNNING),
    ("worst wins", [(Phase.INCONCLUSIVE, False), (Phase.FAILED, False), (Phase.ERROR, False)],
     False, Phase.FAILED),
    ("error over inconclusive", [(Phase.INCONCLUSIVE, False), (Phase.ERROR, False)], False,
     Phase.ERROR),
    ("dry-run failure excluded", [(Phase.SUCCESSFUL, False), (Phase.FAILED, True)], False,
     Phase.SUCCESSFUL),
    ("only dry-run metrics", [(Phase.FAILED, True)], False, Phase.SUCCESSFUL),
    ("terminating ends at once", [(Phase.FAILED, False), (Phase.RUNNING, False)], True,
     Phase.FAILED),
    ("terminating with nothing measured", [(Phase.PENDING, False)], True, Phase.SUCCESSFUL),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "phases", "terminating", "expected"), RUN_ROWS, ids=[row[0] for row in RUN_ROWS]
)
def test_run_phase(
    rule: str, phases: list[tuple[Phase, bool]], terminating: bool, expected: Phase
) -> None:
    assert run_phase(phases, terminating) == expected


def test_failed_metric_stops_scheduling_and_ends_the_run(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, by_query={"a": [OK], "b": [BAD]})
    run = make_run(
        clock,
        prometheus,
        metric("a", "a", successCondition=SUCCESS, interval="10s"),
        metric("b", "b", successCondition=SUCCESS, interval="10s", count=5, initialDelay="15s"),
    )
    run_to_completion(run, clock, deadline=clock.now() + 600)
    assert run.phase == Phase.FAILED
    assert run.metric_phase("b") == Phase.FAILED
    assert run.metric_phase("a") == Phase.SUCCESSFUL  # the indefinite metric ends with the run
    assert len(prometheus.times("a")) == 2 and len(prometheus.times("b")) == 1
    assert run.next_reconcile_at() is None
    assert run.reconcile() == []


def test_inconclusive_metric_ends_the_run(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, by_query={"a": [OK], "b": [MID]})
    run = drive(
        clock,
        prometheus,
        metric("a", "a", successCondition=SUCCESS, interval="10s", count=5),
        metric("b", "b", successCondition=SUCCESS, failureCondition=FAILURE),
    )
    assert run.phase == Phase.INCONCLUSIVE
    assert len(prometheus.times("a")) == 1


def test_dry_run_metric_never_fails_the_run(clock: FakeClock) -> None:
    prometheus = ScriptedPrometheus(clock, by_query={"a": [OK], "b": [BAD]})
    run = drive(
        clock,
        prometheus,
        metric("a", "a", successCondition=SUCCESS, interval="10s", count=3),
        metric("latency-b", "b", successCondition=SUCCESS, interval="10s", count=3),
        dryRun=[{"metricName": "latency-.*"}],
    )
    assert run.metric_phase("latency-b") == Phase.FAILED
    assert run.phase == Phase.SUCCESSFUL
    assert len(prometheus.times("a")) == 3  # a dry-run failure does not stop scheduling


def test_dry_run_rule_must_match(clock: FakeClock) -> None:
    run = make_run(
        clock,
        ScriptedPrometheus(clock, [OK]),
        metric(successCondition=SUCCESS),
        dryRun=[{"metricName": "nope"}],
    )
    assert run.phase == Phase.ERROR
    assert "dryRun[0]: Rule didn't match" in run.message


# --------------------------------------------------------------------------------------------
# Invalid specs -> run Error


INVALID_ROWS: list[tuple[str, dict[str, Any], str]] = [
    ("negative failureLimit", {"failureLimit": -2}, "failureLimit must be >= 0"),
    ("-1 without consecutiveSuccessLimit", {"failureLimit": -1}, "failureLimit must be >= 0"),
    ("negative inconclusiveLimit", {"inconclusiveLimit": -1}, "inconclusiveLimit must be >= 0"),
    ("negative consecutiveErrorLimit", {"consecutiveErrorLimit": -1}, "consecutiveErrorLimit"),
    ("negative consecutiveSuccessLimit", {"consecutiveSuccessLimit": -1}, "consecutiveSuccess"),
    ("count < failureLimit", {"count": 2, "failureLimit": 3, "interval": "1s"}, "count must be"),
    ("count < inconclusiveLimit", {"count": 1, "inconclusiveLimit": 2}, "count must be >= incon"),
    ("count > 1 without interval", {"count": 2}, "interval must be specified"),
    ("unparsable interval", {"interval": "5 minutes"}, "invalid interval string"),
    ("bare number interval", {"interval": "30"}, "invalid interval string"),
    ("unparsable initialDelay", {"initialDelay": "soon"}, "invalid startDelay string"),
    ("no provider", {"provider": {}}, "no provider specified"),
    (
        "two providers",
        {"provider": {"prometheus": {"query": "q"}, "web": {"url": "http://x"}}},
        "multiple providers",
    ),
]


@pytest.mark.parametrize(
    ("rule", "fields", "message"), INVALID_ROWS, ids=[row[0] for row in INVALID_ROWS]
)
def test_invalid_spec_puts_run_in_error(
    clock: FakeClock, rule: str, fields: dict[str, Any], message: str
) -> None:
    prometheus = ScriptedPrometheus(clock, [OK])
    run = make_run(clock, prometheus, metric(successCondition=SUCCESS, **fields))
    assert run.phase == Phase.ERROR, rule
    assert message in run.message
    assert run.reconcile() == [] and prometheus.calls == []


def test_duplicate_metric_names_put_run_in_error(clock: FakeClock) -> None:
    run = make_run(clock, ScriptedPrometheus(clock, [OK]), metric("a"), metric("a"))
    assert run.phase == Phase.ERROR
    assert "two metrics have the same name 'a'" in run.message


def test_duplicate_names_across_templates(clock: FakeClock) -> None:
    with pytest.raises(AnalysisSpecError, match="same name"):
        run_spec_from_templates([template(metric("a")), template(metric("a"))])


def test_no_metrics_is_an_error(clock: FakeClock) -> None:
    run = make_run(clock, ScriptedPrometheus(clock, [OK]))
    assert run.phase == Phase.ERROR and "no metrics specified" in run.message


def test_non_prometheus_provider_cannot_be_rehearsed(clock: FakeClock) -> None:
    spec = run_spec_from_templates([template(metric(provider={"web": {"url": "http://x"}}))])
    with pytest.raises(RehearsalUnsupported, match="provider 'web'"):
        AnalysisRun("run", spec, ScriptedPrometheus(clock, [OK]), clock)


@pytest.mark.parametrize(
    ("prometheus_fields", "message"),
    [
        ({"timeout": -1}, "timeout should not be negative"),
        ({"address": ""}, "address is not configured"),
        ({"address": "prometheus:9090"}, "not in url format"),
    ],
)
def test_provider_construction_failures_are_measurement_errors(
    clock: FakeClock, prometheus_fields: dict[str, Any], message: str, monkeypatch: Any
) -> None:
    monkeypatch.delenv("ARGO_ROLLOUTS_PROMETHEUS_ADDRESS", raising=False)
    fake = ScriptedPrometheus(clock, [OK])
    provider = {"prometheus": {"address": "http://p:9090", "query": "q", **prometheus_fields}}
    run = drive(clock, fake, metric(successCondition=SUCCESS, provider=provider))
    assert run.phase == Phase.ERROR
    assert message in run.results["success-rate"].measurements[0].message
    assert fake.calls == []


def test_address_falls_back_to_default(clock: FakeClock) -> None:
    fake = ScriptedPrometheus(clock, [OK])
    provider = {"prometheus": {"query": "q", "timeout": 5}}
    spec = run_spec_from_templates([template(metric(successCondition=SUCCESS, provider=provider))])
    run = AnalysisRun("run", spec, fake, clock, default_address="http://env:9090")
    run_to_completion(run, clock)
    assert run.phase == Phase.SUCCESSFUL
    assert run.metrics[0].provider is not None
    assert run.metrics[0].provider.address == "http://env:9090"
    assert run.metrics[0].provider.timeout_seconds == 5.0


# --------------------------------------------------------------------------------------------
# Templating


def test_args_template_the_whole_metric(clock: FakeClock) -> None:
    fake = ScriptedPrometheus(clock, [BAD])
    templated = metric(
        query='sum(rate(x{pod_hash="{{args.canary-hash}}"}[5m]))',
        successCondition="result[0] >= {{ args.threshold }}",
        failureLimit="{{args.limit}}",
        interval="{{args.interval}}",
        count=3,
        provider={
            "prometheus": {
                "address": "{{args.prometheus}}",
                "query": 'sum(rate(x{pod_hash="{{args.canary-hash}}"}[5m]))',
            }
        },
    )
    spec = run_spec_from_templates(
        [
            template(
                templated,
                args=[
                    {"name": "canary-hash"},
                    {"name": "threshold", "value": "0.99"},
                    {"name": "limit", "value": "1"},
                    {"name": "interval", "value": "7s"},
                    {"name": "prometheus", "value": "http://prom:9090"},
                ],
            )
        ],
        [{"name": "canary-hash", "value": "abc123"}, {"name": "threshold", "value": "0.4"}],
    )
    run = AnalysisRun("run", spec, fake, clock)
    start = clock.now()
    run_to_completion(run, clock)
    resolved = run.metrics[0]
    assert resolved.provider is not None
    assert resolved.provider.query == 'sum(rate(x{pod_hash="abc123"}[5m]))'
    assert resolved.provider.address == "http://prom:9090"
    assert resolved.success_condition == "result[0] >= 0.4"  # the Rollout's arg overrides
    assert (resolved.failure_limit, resolved.interval) == (1, 7.0)
    assert run.phase == Phase.SUCCESSFUL  # 0.5 >= 0.4
    assert [t - start for t in fake.times()] == [0, 7, 14]


TEMPLATE_ERRORS: list[tuple[str, str, str]] = [
    ("unknown arg", "x{{args.nope}}", "failed to resolve {{args.nope}}"),
    ("not an args tag", "{{inputs.x}}", "failed to resolve {{inputs.x}}"),
    ("literal {{ in PromQL", 'label_replace(x, "{{", "", "", "")', "Cannot find end tag"),
    ("literal {{...}} in PromQL", "x{{le}}", "failed to resolve {{le}}"),
]


@pytest.mark.parametrize(
    ("rule", "query", "message"), TEMPLATE_ERRORS, ids=[row[0] for row in TEMPLATE_ERRORS]
)
def test_unknown_template_tags_put_run_in_error(
    clock: FakeClock, rule: str, query: str, message: str
) -> None:
    run = make_run(
        clock,
        ScriptedPrometheus(clock, [OK]),
        metric(query=query, provider={"prometheus": {"address": "http://p:1", "query": query}}),
        args=[{"name": "x", "value": "1"}],
    )
    assert run.phase == Phase.ERROR, rule
    assert message in run.message


def test_resolve_template_string_keeps_values_verbatim() -> None:
    assert resolve_template_string("a{{args.x}}b", {"x": "{{not-a-tag}}"}) == "a{{not-a-tag}}b"


def test_unresolved_arg_is_an_error() -> None:
    with pytest.raises(AnalysisSpecError, match="args.canary-hash was not resolved"):
        merge_args([{"name": "canary-hash"}], [])


def test_value_from_goes_through_the_resolver() -> None:
    seen: list[tuple[str, Any]] = []

    def resolver(name: str, value_from: Any) -> str:
        seen.append((name, value_from))
        return "hash-latest"

    args = merge_args(
        [{"name": "h"}, {"name": "env", "value": "dev"}],
        [{"name": "h", "valueFrom": {"podTemplateHashValue": "Latest"}}, {"name": "other"}],
        resolver,
    )
    assert args == {"h": "hash-latest", "env": "dev"}
    assert seen == [("h", {"podTemplateHashValue": "Latest"})]
    with pytest.raises(AnalysisSpecError, match="no resolver"):
        merge_args([{"name": "h", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}], [])


def test_conflicting_template_args() -> None:
    with pytest.raises(AnalysisSpecError, match="specified multiple times"):
        merge_args([{"name": "a", "value": "1"}, {"name": "a", "value": "2"}], [])
    assert merge_args([{"name": "a"}, {"name": "a", "value": "2"}], []) == {"a": "2"}


# --------------------------------------------------------------------------------------------
# Small parsers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5s", 1.5), ("300ms", 0.3), ("0", 0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "5 m", "m", "1d", "-", ".s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("duration", "seconds"), [(30, 30), ("30", 30), ("30s", 30), ("5m", 300), ("1500ms", 1)]
)
def test_pause_seconds(duration: Any, seconds: float) -> None:
    assert pause_seconds(duration) == seconds


@pytest.mark.parametrize("duration", ["soon", True, 1.5, None])
def test_pause_seconds_rejects(duration: Any) -> None:
    with pytest.raises(ValueError):
        pause_seconds(duration)


def test_int_or_string_reproduces_atoi() -> None:
    assert [int_or_string(v, 7) for v in (None, 3, "3", "three", 2.0, True)] == [7, 3, 3, 0, 2, 1]


def test_build_metric_defaults() -> None:
    spec = build_metric(metric(), None)
    assert (spec.count, spec.failure_limit, spec.inconclusive_limit) == (0, 0, 0)
    assert (spec.consecutive_error_limit, spec.consecutive_success_limit) == (4, 0)
    assert spec.effective_count == 1
    assert build_metric(metric(interval="1m"), None).effective_count is None


def test_time_factor_must_be_positive(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        make_run(clock, ScriptedPrometheus(clock, [OK]), metric(), time_factor=0)


def test_malformed_condition_errors_every_measurement_like_argo(clock: FakeClock) -> None:
    fake = ScriptedPrometheus(clock, [OK])
    run = drive(clock, fake, metric(successCondition="result[0] >=", interval="1s", count=3))
    assert run.phase == Phase.ERROR
    assert len(fake.calls) == 5
    assert "unexpected token 'end of input'" in run.results["success-rate"].measurements[0].message


def test_names_equal_after_templating_are_duplicates(clock: FakeClock) -> None:
    spec = run_spec_from_templates(
        [template(metric("m-{{args.a}}"), metric("m-x"), args=[{"name": "a", "value": "x"}])]
    )
    run = AnalysisRun("run", spec, ScriptedPrometheus(clock, [OK]), clock)
    assert run.phase == Phase.ERROR
    assert "metrics[1]: duplicate name 'm-x'" in run.message


def test_invalid_dry_run_regexp(clock: FakeClock) -> None:
    run = make_run(clock, ScriptedPrometheus(clock, [OK]), metric(), dryRun=[{"metricName": "("}])
    assert run.phase == Phase.ERROR and "dryRun[0]: invalid regexp" in run.message


@pytest.mark.parametrize("field", ["rangeQuery", "authentication"])
def test_prometheus_features_the_rehearsal_does_not_implement(clock: FakeClock, field: str) -> None:
    provider = {"prometheus": {"address": "http://p:1", "query": "q", field: {"x": "y"}}}
    spec = run_spec_from_templates([template(metric(provider=provider))])
    with pytest.raises(RehearsalUnsupported, match=field):
        AnalysisRun("run", spec, ScriptedPrometheus(clock, [OK]), clock)


def test_failing_metric_names_the_culprit(clock: FakeClock) -> None:
    fake = ScriptedPrometheus(clock, by_query={"a": [OK], "b": [BAD]})
    run = drive(
        clock,
        fake,
        metric("a", "a", successCondition=SUCCESS),
        metric("b", "b", successCondition=SUCCESS),
    )
    assert run.failing_metric is not None and run.failing_metric.name == "b"
    run.terminate()  # terminating a completed run changes nothing
    assert run.phase == Phase.FAILED


def test_system_clock_sleeps_until_the_deadline() -> None:
    from scripts.rehearsal.analysis import SystemClock

    real = SystemClock()
    deadline = real.now() + 0.01
    real.sleep_until(deadline)
    assert real.now() >= deadline
    real.sleep_until(deadline - 1)  # a past deadline returns at once
