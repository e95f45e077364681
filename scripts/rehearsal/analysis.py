"""Argo Rollouts AnalysisRun semantics as plain code: injectable clock and query function, no I/O.

Follows ../shared/REFERENCE.md ("Argo Rollouts analysis"), which was read from the controller's
source (analysis/analysis.go, utils/analysis, utils/evaluate). Where the controller reconciles a
Kubernetes object, `AnalysisRun.reconcile()` does the same work on an in-memory object: take due
measurements, assess metric phases, assess the run phase, and say when it wants to be called next.

Timing: every duration of the spec (interval, initialDelay, the 10 s error retry) is divided by
`time_factor`, so a rehearsal can play a 5-minute analysis in 5 s (factor 60) with the same
ordering of events. PromQL range windows inside queries are not touched: the queries run unchanged.
"""

from __future__ import annotations

import json
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Mapping, Protocol, Sequence

from scripts.rehearsal.expr import (
    Condition,
    ConditionError,
    ExprSyntaxError,
    UnsupportedExpression,
    Value,
    compile_condition,
)
from scripts.rehearsal.prometheus import (
    PrometheusQuery,
    ProviderError,
    QueryFunction,
    result_from_data,
)

DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4
DEFAULT_ERROR_RETRY_SECONDS = 10.0
DEFAULT_PROMETHEUS_TIMEOUT_SECONDS = 30.0
PROMETHEUS_ADDRESS_ENV = "ARGO_ROLLOUTS_PROMETHEUS_ADDRESS"


class Phase(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    ERROR = "Error"
    INCONCLUSIVE = "Inconclusive"

    @property
    def completed(self) -> bool:
        return self in (Phase.SUCCESSFUL, Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE)

    def __str__(self) -> str:
        return self.value


# Best to worst (utils/analysis.analysisStatusOrder).
_PHASE_ORDER = [
    Phase.SUCCESSFUL,
    Phase.RUNNING,
    Phase.PENDING,
    Phase.INCONCLUSIVE,
    Phase.ERROR,
    Phase.FAILED,
]


def worst(left: Phase, right: Phase) -> Phase:
    return right if _PHASE_ORDER.index(right) > _PHASE_ORDER.index(left) else left


class AnalysisSpecError(Exception):
    """The run cannot start: unresolvable args, invalid spec. Argo puts the run in Error."""


class RehearsalUnsupported(Exception):
    """Valid Argo Rollouts input the rehearsal cannot reproduce; it stops instead of guessing."""


# ---------------------------------------------------------------------------------------------
# Clock


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep_until(self, deadline: float) -> None: ...


class SystemClock:
    """Monotonic seconds; sleeping is the only way a real rehearsal can wait for Prometheus data."""

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)


class FakeClock:
    """Time moves only when asked: tests play hours of analysis in microseconds."""

    def __init__(self, start: float = 0.0) -> None:
        self.current = start

    def now(self) -> float:
        return self.current

    def sleep_until(self, deadline: float) -> None:
        self.current = max(self.current, deadline)

    def advance(self, seconds: float) -> None:
        self.current += seconds


# ---------------------------------------------------------------------------------------------
# Durations and int-or-string fields

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0}
_DURATION_UNITS.update({"m": 60.0, "h": 3600.0})
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds: "30s", "5m", "1h30m", "1.5s", "300ms"; "0" alone is
    allowed without a unit; anything else (including a bare "30") is invalid."""
    original = text
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {original!r}: not a string")
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f'time: invalid duration "{original}"')
    total = 0.0
    position = 0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if not match or match.group(1) in ("", "."):
            raise ValueError(f'time: invalid duration "{original}"')
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    return sign * total


def pause_seconds(duration: Any) -> float:
    """A canary `pause.duration`: an int (seconds) or a string, either an int ("30") or a Go
    duration ("30s", "5m") (RolloutPause.DurationSeconds); invalid -> ValueError."""
    if isinstance(duration, bool):
        raise ValueError(f"invalid pause duration {duration!r}")
    if isinstance(duration, int):
        return float(duration)
    if isinstance(duration, str):
        if re.fullmatch(r"[+-]?[0-9]+", duration):
            return float(int(duration))
        seconds = parse_duration(duration)
        return float(int(seconds))  # DurationSeconds truncates to whole seconds
    raise ValueError(f"invalid pause duration {duration!r}")


def int_or_string(value: Any, default: int) -> int:
    """intstr.IntOrString.IntValue(): ints as is, strings through Atoi, where a string that is not
    an integer silently becomes 0 in the controller (reproduced, not corrected)."""
    if value is None:
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value) if re.fullmatch(r"[+-]?[0-9]+", value) else 0
    return 0


# ---------------------------------------------------------------------------------------------
# Args and templating

_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)

ValueFromResolver = Callable[[str, Mapping[str, Any]], str]


def merge_args(
    template_args: Sequence[Mapping[str, Any]],
    incoming_args: Sequence[Mapping[str, Any]],
    resolve_value_from: ValueFromResolver | None = None,
) -> dict[str, str]:
    """MergeArgs + BuildArgumentsForRolloutAnalysisRun: the templates declare args (optionally with
    a default `value`); the Rollout's analysis block supplies `value` or `valueFrom`. An arg with
    neither -> "args.<name> was not resolved" (the run cannot start)."""
    merged: dict[str, dict[str, Any]] = {}
    for arg in template_args:
        name = str(arg.get("name", ""))
        previous = merged.get(name)
        if previous is not None:
            if (
                previous.get("value") is not None
                and arg.get("value") is not None
                and previous["value"] != arg["value"]
            ):
                raise AnalysisSpecError(
                    f"Argument `{name}` specified multiple times with different values: "
                    f"'{previous['value']}', '{arg['value']}'"
                )
            if previous.get("value") is None:
                merged[name] = dict(arg)
            continue
        merged[name] = dict(arg)
    for arg in incoming_args:
        name = str(arg.get("name", ""))
        if name not in merged:
            continue  # an arg no template declares is ignored, as in MergeArgs
        if arg.get("value") is not None:
            merged[name]["value"] = arg["value"]
            merged[name].pop("valueFrom", None)
        elif arg.get("valueFrom") is not None:
            merged[name]["valueFrom"] = arg["valueFrom"]
    resolved: dict[str, str] = {}
    for name, arg in merged.items():
        if arg.get("value") is not None:
            resolved[name] = str(arg["value"])
        elif arg.get("valueFrom") is not None:
            if resolve_value_from is None:
                raise AnalysisSpecError(f"args.{name} uses valueFrom but no resolver was given")
            resolved[name] = resolve_value_from(name, arg["valueFrom"])
        else:
            raise AnalysisSpecError(f"args.{name} was not resolved")
    return resolved


def resolve_template_string(text: str, args: Mapping[str, str]) -> str:
    """fasttemplate with "{{" / "}}": `{{args.x}}` (spaces allowed) is replaced, any other tag or an
    unclosed "{{" is an error, so a literal "{{" in PromQL breaks the run exactly as in Argo."""

    def substitute(match: re.Match[str]) -> str:
        tag = match.group(1).strip()
        if tag.startswith("args.") and tag[len("args.") :] in args:
            return args[tag[len("args.") :]]
        raise AnalysisSpecError(f"failed to resolve {{{{{match.group(1)}}}}}")

    # fasttemplate fails on an unclosed "{{" before substituting anything.
    unclosed = _TAG.sub("", text).find("{{")
    if unclosed >= 0:
        raise AnalysisSpecError(f'Cannot find end tag="}}}}" after {text[unclosed:][:40]!r}')
    return _TAG.sub(substitute, text)


def template_metric(metric: Mapping[str, Any], args: Mapping[str, str]) -> dict[str, Any]:
    """Resolve args in every string of the metric (query, address, conditions, limits...), as Argo
    does by templating the metric's JSON."""

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return resolve_template_string(node, args)
        if isinstance(node, Mapping):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    resolved = walk(metric)
    assert isinstance(resolved, dict)
    # A JSON round trip keeps the result a plain tree, like the controller's re-unmarshal.
    return dict(json.loads(json.dumps(resolved)))


# ---------------------------------------------------------------------------------------------
# Metric spec and validation


@dataclass(frozen=True)
class MetricSpec:
    name: str
    provider: PrometheusQuery | None
    provider_error: str | None  # provider cannot be built: every measurement is Error
    interval: float | None = None  # seconds, unscaled
    initial_delay: float | None = None
    count: int = 0
    failure_limit: int = 0
    inconclusive_limit: int = 0
    consecutive_error_limit: int = DEFAULT_CONSECUTIVE_ERROR_LIMIT
    consecutive_success_limit: int = 0
    success_condition: str = ""
    failure_condition: str = ""
    dry_run: bool = False

    @property
    def effective_count(self) -> int | None:
        """count unset/0: one measurement without interval, indefinite with one (None)."""
        if self.count == 0:
            return 1 if self.interval is None else None
        return self.count


_KNOWN_PROVIDERS = (
    "prometheus",
    "job",
    "web",
    "wavefront",
    "kayenta",
    "datadog",
    "newRelic",
    "cloudWatch",
    "graphite",
    "influxdb",
    "skywalking",
    "plugin",
)


def _provider(
    metric: Mapping[str, Any], default_address: str | None
) -> tuple[PrometheusQuery | None, str | None]:
    provider = metric.get("provider") or {}
    kinds = [key for key in provider if key in _KNOWN_PROVIDERS and provider[key] is not None]
    if not kinds:
        raise AnalysisSpecError("no provider specified")
    if len(kinds) > 1:
        raise AnalysisSpecError("multiple providers specified")
    if kinds[0] != "prometheus":
        raise RehearsalUnsupported(
            f"metric {metric.get('name')!r}: provider {kinds[0]!r} cannot be rehearsed "
            "(only prometheus)"
        )
    spec = provider["prometheus"]
    for unsupported in ("rangeQuery", "authentication"):
        if spec.get(unsupported):
            raise RehearsalUnsupported(
                f"metric {metric.get('name')!r}: prometheus.{unsupported} is not implemented by "
                "the rehearsal"
            )
    timeout_raw = spec.get("timeout")
    timeout = DEFAULT_PROMETHEUS_TIMEOUT_SECONDS if timeout_raw is None else float(timeout_raw)
    if timeout < 0:
        return None, "prometheus timeout should not be negative"
    address = str(spec.get("address") or "") or (default_address or "")
    if not address:
        return None, "prometheus address is not configured"
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]+", address):
        return None, "prometheus address is not in url format"
    headers = tuple((str(h.get("key")), str(h.get("value"))) for h in spec.get("headers") or [])
    query = PrometheusQuery(
        address=address,
        query=str(spec.get("query") or ""),
        timeout_seconds=timeout,
        headers=headers,
        insecure=bool(spec.get("insecure", False)),
    )
    return query, None


def _duration_field(metric: Mapping[str, Any], key: str, label: str) -> float | None:
    raw = metric.get(key)
    if raw in (None, ""):
        return None
    try:
        return parse_duration(str(raw))
    except ValueError as exc:
        raise AnalysisSpecError(f"invalid {label} string: {exc}") from None


def build_metric(
    metric: Mapping[str, Any], default_address: str | None, dry_run: bool = False
) -> MetricSpec:
    """Validate one resolved metric (ValidateMetric) and turn it into a MetricSpec."""
    name = str(metric.get("name") or "")
    count = int_or_string(metric.get("count"), 0)
    failure_limit = int_or_string(metric.get("failureLimit"), 0)
    inconclusive_limit = int_or_string(metric.get("inconclusiveLimit"), 0)
    consecutive_error_limit = int_or_string(
        metric.get("consecutiveErrorLimit"), DEFAULT_CONSECUTIVE_ERROR_LIMIT
    )
    consecutive_success_limit = int_or_string(metric.get("consecutiveSuccessLimit"), 0)
    interval = _duration_field(metric, "interval", "interval")
    initial_delay = _duration_field(metric, "initialDelay", "startDelay")
    if count > 0:
        if count < failure_limit:
            raise AnalysisSpecError("count must be >= failureLimit")
        if count < inconclusive_limit:
            raise AnalysisSpecError("count must be >= inconclusiveLimit")
    if count > 1 and interval is None:
        raise AnalysisSpecError("interval must be specified when count > 1")
    if failure_limit < 0 and not (failure_limit == -1 and consecutive_success_limit > 0):
        raise AnalysisSpecError(
            "failureLimit must be >= 0 (or -1 together with consecutiveSuccessLimit > 0)"
        )
    if inconclusive_limit < 0:
        raise AnalysisSpecError("inconclusiveLimit must be >= 0")
    if consecutive_error_limit < 0:
        raise AnalysisSpecError("consecutiveErrorLimit must be >= 0")
    if consecutive_success_limit < 0:
        raise AnalysisSpecError("consecutiveSuccessLimit must be >= 0")
    provider, provider_error = _provider(metric, default_address)
    return MetricSpec(
        name=name,
        provider=provider,
        provider_error=provider_error,
        interval=interval,
        initial_delay=initial_delay,
        count=count,
        failure_limit=failure_limit,
        inconclusive_limit=inconclusive_limit,
        consecutive_error_limit=consecutive_error_limit,
        consecutive_success_limit=consecutive_success_limit,
        success_condition=str(metric.get("successCondition") or ""),
        failure_condition=str(metric.get("failureCondition") or ""),
        dry_run=dry_run,
    )


def _matching_metrics(
    rules: Sequence[Mapping[str, Any]], names: Sequence[str], field_name: str
) -> set[str]:
    matched: set[str] = set()
    for index, rule in enumerate(rules):
        pattern = str(rule.get("metricName", ""))
        try:
            hits = {name for name in names if re.search(pattern, name)}
        except re.error as exc:
            raise AnalysisSpecError(f"{field_name}[{index}]: invalid regexp: {exc}") from None
        if not hits:
            raise AnalysisSpecError(f"{field_name}[{index}]: Rule didn't match any metric name(s)")
        matched |= hits
    return matched


@dataclass(frozen=True)
class RunSpec:
    """What an AnalysisRun is created from: templates flattened, args merged."""

    metrics: tuple[Mapping[str, Any], ...]
    args: Mapping[str, str]
    dry_run: tuple[Mapping[str, Any], ...] = ()
    measurement_retention: tuple[Mapping[str, Any], ...] = ()


def run_spec_from_templates(
    templates: Sequence[Mapping[str, Any]],
    incoming_args: Sequence[Mapping[str, Any]] = (),
    resolve_value_from: ValueFromResolver | None = None,
    dry_run_rules: Sequence[Mapping[str, Any]] = (),
    measurement_retention_rules: Sequence[Mapping[str, Any]] = (),
) -> RunSpec:
    """NewAnalysisRunFromTemplates: concatenate metrics (duplicate names are an error), merge args,
    dryRun and measurementRetention rules of every referenced (Cluster)AnalysisTemplate."""
    metrics: list[Mapping[str, Any]] = []
    template_args: list[Mapping[str, Any]] = []
    # The Rollout's own analysis block may add dryRun / measurementRetention rules.
    dry_run: list[Mapping[str, Any]] = list(dry_run_rules)
    retention: list[Mapping[str, Any]] = list(measurement_retention_rules)
    for template in templates:
        spec = template.get("spec") or {}
        metrics.extend(spec.get("metrics") or [])
        template_args.extend(spec.get("args") or [])
        dry_run.extend(spec.get("dryRun") or [])
        retention.extend(spec.get("measurementRetention") or [])
    seen: set[str] = set()
    for metric in metrics:
        name = str(metric.get("name"))
        if name in seen:
            raise AnalysisSpecError(f"two metrics have the same name '{name}'")
        seen.add(name)
    args = merge_args(template_args, incoming_args, resolve_value_from)
    return RunSpec(tuple(metrics), args, tuple(dry_run), tuple(retention))


def resolve_metrics(
    spec: RunSpec, default_address: str | None = None
) -> tuple[list[MetricSpec], dict[str, Condition | ExprSyntaxError]]:
    """Template every metric, validate the whole spec, compile conditions.

    Raises AnalysisSpecError (run Error), RehearsalUnsupported or UnsupportedExpression (the
    rehearsal cannot judge). A condition that does not parse is kept as its ExprSyntaxError: Argo
    compiles conditions per measurement, so each measurement becomes Error.
    """
    if not spec.metrics:
        raise AnalysisSpecError("no metrics specified")
    resolved = [template_metric(metric, spec.args) for metric in spec.metrics]
    names = [str(metric.get("name") or "") for metric in resolved]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise AnalysisSpecError(f"metrics[{index}]: duplicate name '{name}'")
    dry_run = _matching_metrics(spec.dry_run, names, "dryRun")
    _matching_metrics(spec.measurement_retention, names, "measurementRetention")
    metrics: list[MetricSpec] = []
    for index, raw in enumerate(resolved):
        try:
            metrics.append(build_metric(raw, default_address, names[index] in dry_run))
        except AnalysisSpecError as exc:
            raise AnalysisSpecError(f"metrics[{index}]: {exc}") from None
    conditions: dict[str, Condition | ExprSyntaxError] = {}
    for metric in metrics:
        for source in (metric.success_condition, metric.failure_condition):
            if source and source not in conditions:
                try:
                    conditions[source] = compile_condition(source)
                except UnsupportedExpression:
                    raise
                except ExprSyntaxError as exc:
                    conditions[source] = exc
    return metrics, conditions


# ---------------------------------------------------------------------------------------------
# One measurement


def measurement_phase(
    metric: MetricSpec,
    result: Value,
    conditions: Mapping[str, Condition | ExprSyntaxError] | None = None,
) -> tuple[Phase, str]:
    """evaluate.EvaluateResult: the phase of one measurement from its conditions.

    Both: failure true -> Failed (even if success is true too), else success true -> Successful,
    else Inconclusive. Only success: false -> Failed. Only failure: false -> Successful. Neither ->
    Successful (the code, not the docs). A condition that cannot be evaluated -> Error.
    """
    cache = conditions or {}

    def check(source: str) -> bool:
        compiled = cache.get(source)
        if compiled is None:
            compiled = compile_condition(source)
        if isinstance(compiled, ExprSyntaxError):
            raise compiled
        return compiled.evaluate(result)

    try:
        success = check(metric.success_condition) if metric.success_condition else False
        failure = check(metric.failure_condition) if metric.failure_condition else False
    except UnsupportedExpression:
        raise
    except ConditionError as exc:
        return Phase.ERROR, str(exc)
    has_success, has_failure = bool(metric.success_condition), bool(metric.failure_condition)
    if not has_success and not has_failure:
        return Phase.SUCCESSFUL, ""
    if has_success and not has_failure:
        failure = not success
    elif has_failure and not has_success:
        success = not failure
    if failure:
        return Phase.FAILED, ""
    if not success:
        return Phase.INCONCLUSIVE, ""
    return Phase.SUCCESSFUL, ""


@dataclass
class Measurement:
    metric: str
    phase: Phase
    started_at: float
    finished_at: float
    value: str = ""
    message: str = ""
    result: Value | None = None
    query: str = ""
    address: str = ""


def take_measurement(
    metric: MetricSpec,
    query: QueryFunction,
    clock: Clock,
    conditions: Mapping[str, Condition | ExprSyntaxError] | None = None,
) -> Measurement:
    """Provider.Run + EvaluateResult: query, shape the answer, judge it. Provider failures and
    unsupported answer types are Error, never Failed."""
    started = clock.now()
    if metric.provider is None:
        return Measurement(
            metric.name, Phase.ERROR, started, clock.now(), message=str(metric.provider_error)
        )
    request = metric.provider
    try:
        data = query(request)
        result, value = result_from_data(data)
    except ProviderError as exc:
        return Measurement(
            metric.name,
            Phase.ERROR,
            started,
            clock.now(),
            message=str(exc),
            query=request.query,
            address=request.address,
        )
    phase, message = measurement_phase(metric, result, conditions)
    return Measurement(
        metric.name,
        phase,
        started,
        clock.now(),
        value=value,
        message=message,
        result=result,
        query=request.query,
        address=request.address,
    )


# ---------------------------------------------------------------------------------------------
# Metric and run phases


@dataclass
class MetricResult:
    name: str
    dry_run: bool = False
    phase: Phase = Phase.RUNNING
    measurements: list[Measurement] = field(default_factory=list)
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    consecutive_success: int = 0
    message: str = ""

    def record(self, measurement: Measurement) -> None:
        """runMeasurements' bookkeeping: errors do not count toward `count`."""
        self.measurements.append(measurement)
        if measurement.phase == Phase.ERROR:
            self.error += 1
            self.consecutive_error += 1
            self.consecutive_success = 0
            return
        self.count += 1
        self.consecutive_error = 0
        if measurement.phase == Phase.SUCCESSFUL:
            self.successful += 1
            self.consecutive_success += 1
        else:
            self.consecutive_success = 0
            if measurement.phase == Phase.FAILED:
                self.failed += 1
            else:
                self.inconclusive += 1


def failure_inconclusive_or_error(
    metric: MetricSpec, result: MetricResult
) -> tuple[Phase | None, str]:
    """assessMetricFailureInconclusiveOrError: checked in this order, a later rule overriding an
    earlier one (so 5 consecutive errors beat an earlier failure)."""
    phase: Phase | None = None
    message = ""
    if metric.failure_limit >= 0 and result.failed > metric.failure_limit:
        phase = Phase.FAILED
        message = f"failed ({result.failed}) > failureLimit ({metric.failure_limit})"
    if result.inconclusive > metric.inconclusive_limit:
        phase = Phase.INCONCLUSIVE
        message = (
            f"inconclusive ({result.inconclusive}) > inconclusiveLimit "
            f"({metric.inconclusive_limit})"
        )
    if result.consecutive_error > metric.consecutive_error_limit:
        phase = Phase.ERROR
        message = (
            f"consecutiveErrors ({result.consecutive_error}) > consecutiveErrorLimit "
            f"({metric.consecutive_error_limit})"
        )
    return phase, message


def assess_metric(metric: MetricSpec, result: MetricResult, terminating: bool) -> tuple[Phase, str]:
    """assessMetricStatus: the metric's phase from its counters (pure)."""
    if result.phase.completed:
        return result.phase, result.message
    if not result.measurements:
        return (Phase.SUCCESSFUL, "run terminated") if terminating else (Phase.PENDING, "")
    phase, message = failure_inconclusive_or_error(metric, result)
    if phase is not None:
        return phase, message
    if (
        metric.consecutive_success_limit > 0
        and result.consecutive_success >= metric.consecutive_success_limit
    ):
        return Phase.SUCCESSFUL, (
            f"consecutiveSuccesses ({result.consecutive_success}) reached "
            f"consecutiveSuccessLimit ({metric.consecutive_success_limit})"
        )
    effective = metric.effective_count
    if effective is not None and result.count >= effective:
        # Since v1.8, with a consecutiveSuccessLimit the count reached without the streak is no
        # success: Inconclusive while failureLimit applies (>= 0), Failed when it is -1.
        if metric.consecutive_success_limit > 0:
            streak = (
                f"count ({effective}) reached without consecutiveSuccessLimit "
                f"({metric.consecutive_success_limit})"
            )
            if metric.failure_limit >= 0:
                return (
                    Phase.INCONCLUSIVE,
                    f"{streak}; failureLimit ({metric.failure_limit}) not violated",
                )
            return Phase.FAILED, streak
        return Phase.SUCCESSFUL, f"count ({effective}) reached"
    if terminating:
        return Phase.SUCCESSFUL, "run terminated"
    return Phase.RUNNING, ""


def run_phase(phases: Sequence[tuple[Phase, bool]], terminating: bool) -> Phase:
    """assessRunStatus' verdict from (metric phase, dry_run) pairs: Running until every metric is
    done, then the worst of them; dry-run metrics never make it worse than Successful. A
    terminating run ends at once with the worst completed phase."""
    worst_phase: Phase | None = None
    everything_completed = True
    for phase, dry_run in phases:
        if not phase.completed:
            everything_completed = False
            continue
        if dry_run:
            worst_phase = worst_phase or Phase.SUCCESSFUL
        else:
            worst_phase = phase if worst_phase is None else worst(worst_phase, phase)
    if terminating:
        return worst_phase or Phase.SUCCESSFUL
    if not everything_completed or worst_phase is None:
        return Phase.RUNNING
    return worst_phase


class AnalysisRun:
    """One AnalysisRun: created from a RunSpec, driven by reconcile() calls.

    The caller (the canary driver, or `run_to_completion`) sleeps until `next_reconcile_at()` and
    calls `reconcile()` again; `terminate()` is what the rollout does to a background run when it
    is promoted or aborted.
    """

    def __init__(
        self,
        name: str,
        spec: RunSpec | AnalysisSpecError,
        query: QueryFunction,
        clock: Clock,
        time_factor: float = 1.0,
        default_address: str | None = None,
    ) -> None:
        if time_factor <= 0:
            raise ValueError("time_factor must be > 0")
        self.name = name
        self.query = query
        self.clock = clock
        self.time_factor = time_factor
        self.started_at = clock.now()
        self.phase = Phase.RUNNING
        self.message = ""
        self.terminate_requested = False
        self.metrics: list[MetricSpec] = []
        self.results: dict[str, MetricResult] = {}
        self.conditions: dict[str, Condition | ExprSyntaxError] = {}
        self.finished_at: float | None = None
        try:
            if isinstance(spec, AnalysisSpecError):
                raise spec
            self.metrics, self.conditions = resolve_metrics(spec, default_address)
        except AnalysisSpecError as exc:
            self.phase = Phase.ERROR
            self.message = f"Analysis spec invalid: {exc}"
            self.finished_at = self.started_at

    # -- scheduling -----------------------------------------------------------------------

    def _scaled(self, seconds: float) -> float:
        return seconds / self.time_factor

    def _terminating(self) -> bool:
        if self.terminate_requested:
            return True
        return any(
            not result.dry_run and result.phase in (Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE)
            for result in self.results.values()
        )

    def _due_at(self, metric: MetricSpec) -> float | None:
        """When the next measurement of `metric` is due (None: never again). generateMetricTasks."""
        result = self.results.get(metric.name)
        if result is not None and result.phase.completed:
            return None
        last = result.measurements[-1] if result and result.measurements else None
        if last is None:
            return self.started_at + self._scaled(metric.initial_delay or 0.0)
        effective = metric.effective_count
        if effective is not None and result is not None and result.count >= effective:
            return None
        if last.phase == Phase.ERROR:
            # After an Error, retry in 10 s whatever the interval (DefaultErrorRetryInterval).
            return last.finished_at + self._scaled(DEFAULT_ERROR_RETRY_SECONDS)
        if metric.interval is None:
            return None  # unreachable with consistent bookkeeping, as in the controller
        return last.finished_at + self._scaled(metric.interval)

    def next_reconcile_at(self) -> float | None:
        """calculateNextReconcileTime: the earliest due measurement, None when nothing is due."""
        if self.phase.completed:
            return None
        due = [t for t in (self._due_at(m) for m in self.metrics) if t is not None]
        return min(due) if due else None

    # -- reconcile ------------------------------------------------------------------------

    def reconcile(self) -> list[Measurement]:
        """Take every due measurement, then assess metric and run phases. Returns the new
        measurements (for the timeline)."""
        if self.phase.completed:
            return []
        taken: list[Measurement] = []
        if not self._terminating():
            now = self.clock.now()
            due = [m for m in self.metrics if (t := self._due_at(m)) is not None and now >= t]
            taken = self._measure(due)
            for metric, measurement in zip(due, taken):
                result = self.results.setdefault(
                    metric.name, MetricResult(metric.name, dry_run=metric.dry_run)
                )
                result.record(measurement)
        self._assess()
        # The controller requeues on its own status update: a metric that just turned Failed,
        # Error or Inconclusive terminates the run in the very next pass, not at the next interval.
        if not self.phase.completed and self._terminating():
            self._assess()
        return taken

    def _measure(self, metrics: list[MetricSpec]) -> list[Measurement]:
        """Take the due measurements concurrently, as the controller's goroutines do: their
        finish times then stay together instead of drifting a query's duration apart, so metrics
        with the same interval keep being measured in the same pass."""
        if len(metrics) <= 1:
            return [take_measurement(m, self.query, self.clock, self.conditions) for m in metrics]
        with ThreadPoolExecutor(max_workers=len(metrics)) as pool:
            futures = [
                pool.submit(take_measurement, m, self.query, self.clock, self.conditions)
                for m in metrics
            ]
            return [future.result() for future in futures]

    def _assess(self) -> None:
        terminating = self._terminating()
        phases: list[tuple[Phase, bool]] = []
        for metric in self.metrics:
            result = self.results.get(metric.name)
            if result is None:
                # Never measured (initialDelay pending): not complete, unless the run terminates.
                phases.append((Phase.PENDING, metric.dry_run))
                continue
            phase, message = assess_metric(metric, result, terminating)
            if phase != result.phase:
                result.phase = phase
                result.message = message
            phases.append((phase, metric.dry_run))
        new_phase = run_phase(phases, terminating)
        if new_phase != self.phase:
            self.phase = new_phase
            if new_phase.completed:
                self.finished_at = self.clock.now()
                self.message = self._worst_message()

    def _worst_message(self) -> str:
        if self.terminate_requested and self.phase == Phase.SUCCESSFUL:
            return "Run Terminated"
        for result in self.results.values():
            if (
                not result.dry_run
                and result.phase == self.phase
                and result.phase != Phase.SUCCESSFUL
            ):
                last = result.measurements[-1].message if result.measurements else ""
                text = f'Metric "{result.name}" assessed {result.phase} due to {result.message}'
                return text + (f': "Error Message: {last}"' if last else "")
        return ""

    def terminate(self) -> None:
        """spec.terminate=true: no new measurements; indefinite metrics end Successful."""
        if self.phase.completed:
            return
        self.terminate_requested = True
        self._assess()

    def metric_phase(self, name: str) -> Phase:
        result = self.results.get(name)
        return result.phase if result else Phase.PENDING

    @property
    def failing_metrics(self) -> list[MetricResult]:
        """The non-dry-run metrics that decided a non-Successful run, in spec order."""
        if self.phase == Phase.SUCCESSFUL:
            return []
        return [
            self.results[m.name]
            for m in self.metrics
            if m.name in self.results
            and not self.results[m.name].dry_run
            and self.results[m.name].phase == self.phase
        ]

    @property
    def failing_metric(self) -> MetricResult | None:
        """The first of `failing_metrics` (None for a Successful or never-started run)."""
        culprits = self.failing_metrics
        return culprits[0] if culprits else None


def run_to_completion(run: AnalysisRun, clock: Clock, deadline: float | None = None) -> Phase:
    """Drive one run alone until it completes (or `deadline` passes: it is then left Running)."""
    while True:
        run.reconcile()
        if run.phase.completed:
            return run.phase
        wake = run.next_reconcile_at()
        if wake is None or (deadline is not None and wake > deadline):
            return run.phase
        clock.sleep_until(wake)


def fixed_query(data: Mapping[str, Any]) -> QueryFunction:
    """A query function that always answers `data` (handy in tests and dry runs)."""

    def answer(_: PrometheusQuery) -> Mapping[str, Any]:
        return data

    return answer


def scalar(value: float) -> dict[str, Any]:
    """A Prometheus `data` object holding one scalar (tests build answers with it)."""
    return {"resultType": "scalar", "result": [0, _prom_text(value)]}


def vector(*values: float) -> dict[str, Any]:
    """A Prometheus `data` object holding one instant-vector sample per value."""
    return {
        "resultType": "vector",
        "result": [
            {"metric": {"i": str(i)}, "value": [0, _prom_text(v)]} for i, v in enumerate(values)
        ],
    }


def _prom_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
