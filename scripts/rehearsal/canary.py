"""The canary step driver: walks a rendered Rollout's steps as the Rollouts controller would, with
the analysis runs of `analysis.py`, and says what would happen: Promoted, Aborted, or Paused.

What each step does (docs/ROLLOUTS.md, "Canary steps"):

- ``setWeight``: the canary's traffic share changes at once (`set_weight` callback: the
  orchestrator re-splits its load). Before the first setWeight the canary gets 0 %.
- ``pause: {duration}``: waits the duration divided by `time_factor`.
- ``pause: {}``: a manual promotion gate. A rehearsal cannot press the button for a human, so by
  default it *passes* the gate and says so in the timeline and the verdict (``gates_passed``);
  with ``manual_gates="stop"`` it ends there with "Paused (manual gate)". Passing is the default
  because the question the rehearsal answers is "does the analysis let this model through", and
  stopping would hide every analysis after the gate.
- ``analysis``: an inline AnalysisRun blocks the rollout at the current weight until it completes.
- ``strategy.canary.analysis``: a background run, started once the step index reaches
  ``startingStep`` (0-based; from the start when unset), running until the rollout ends; the
  rollout terminates it when it is promoted (indefinite metrics then end Successful).

Outcomes: Successful -> next step; Inconclusive -> rollout Paused (a human decides); Failed or
Error -> abort (traffic back to stable, rollout Degraded, reason RolloutAborted). After the last
step the canary is promoted to 100 %.

Steps are numbered from 0, like the controller's ``currentStepIndex`` and ``startingStep``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Literal, Mapping, Sequence

from scripts.rehearsal.analysis import (
    AnalysisRun,
    AnalysisSpecError,
    Clock,
    Measurement,
    Phase,
    RehearsalUnsupported,
    pause_seconds,
    run_spec_from_templates,
    template_metric,
)
from scripts.rehearsal.prometheus import QueryFunction


class RolloutSpecError(ValueError):
    """The rendered Rollout or its templates cannot be rehearsed as given (a tool error)."""


class RehearsalTimeout(RuntimeError):
    """The rollout did not reach a verdict within the rehearsal's time budget."""


class Outcome(str, Enum):
    PROMOTED = "Promoted"
    ABORTED = "Aborted"
    PAUSED = "Paused"
    # The controller refuses the Rollout itself (condition InvalidSpec, phase Degraded): no
    # canary starts, the stable keeps serving, nothing is analysed.
    INVALID = "InvalidSpec"

    def __str__(self) -> str:
        return self.value


EXIT_CODES = {Outcome.PROMOTED: 0, Outcome.ABORTED: 1, Outcome.PAUSED: 2, Outcome.INVALID: 4}


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    step: int | None = None  # the step during which the rollout was aborted or paused
    metric: str = ""
    reason: str = ""
    run: str = ""
    gates_passed: tuple[int, ...] = ()  # manual gates the rehearsal passed on a human's behalf
    metrics: tuple[str, ...] = ()  # every metric that reached the run's phase (first = `metric`)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def headline(self) -> str:
        if self.outcome == Outcome.INVALID:
            return f"InvalidSpec: the controller refuses the Rollout ({self.reason})"
        if self.outcome == Outcome.PROMOTED:
            text = "Promoted"
            if self.reason:
                text += f" ({self.reason})"
            if self.gates_passed:
                gates = ", ".join(str(step) for step in self.gates_passed)
                text += f" (manual gate at step {gates} passed by the rehearsal)"
            return text
        where = f" at step {self.step}" if self.step is not None else ""
        if self.outcome == Outcome.ABORTED:
            return f"Aborted{where} ({self.metric or self.run}: {self.reason})"
        if self.metric:
            return f"Paused (inconclusive){where} ({self.metric}: {self.reason})"
        return f"Paused ({self.reason}){where}"


@dataclass(frozen=True)
class Event:
    """One line of the timeline."""

    at: float  # seconds since the rehearsal started (scaled time: what really elapsed)
    step: int | None
    weight: int
    kind: Literal["step", "measurement", "run", "note", "verdict"]
    text: str
    run: str = ""
    metric: str = ""
    value: str = ""
    phase: str = ""


@dataclass
class RunRecord:
    label: str  # "step 2" or "background"
    step: int | None
    run: AnalysisRun
    templates: tuple[str, ...]


@dataclass
class RehearsalResult:
    verdict: Verdict
    events: list[Event]
    runs: list[RunRecord]
    duration: float
    time_factor: float
    steps: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Args from the Rollout (valueFrom)


_PATH_SPLIT = re.compile(r"[.\[\]]+")
_METADATA_MAP = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]")


def field_path_value(rollout: Mapping[str, Any], path: str) -> str:
    """valueFrom.fieldRef.fieldPath: metadata paths as Kubernetes' fieldpath
    (``metadata.labels['k']``, ``metadata.annotations['k']``, ``metadata.name``...), anything else
    walked through the Rollout like extractValueFromRollout (``spec.template.metadata.labels.x``).
    """
    metadata = rollout.get("metadata") or {}
    matched = _METADATA_MAP.fullmatch(path)
    if matched:
        values = metadata.get(matched.group(1)) or {}
        # fieldpath returns "" for a missing key, it is not an error.
        return str(values.get(matched.group(2), ""))
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(metadata.get(path.split(".", 1)[1], ""))
    node: Any = rollout
    for section in _PATH_SPLIT.split(path):
        if section == "":
            continue
        if isinstance(node, list):
            if not section.isdigit():
                raise AnalysisSpecError(f"invalid index '{section}'")
            if int(section) >= len(node):
                raise AnalysisSpecError(f"index {section} out of range")
            node = node[int(section)]
        elif isinstance(node, Mapping):
            node = node.get(section)
        else:
            raise AnalysisSpecError(f"invalid path {path} in rollout")
    if node is None:
        raise AnalysisSpecError(f"invalid path {path} in rollout")
    if isinstance(node, (Mapping, list)):
        raise AnalysisSpecError(f"path {path} in rollout must terminate in a primitive value")
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


@dataclass(frozen=True)
class RolloutArgs:
    """Resolves `valueFrom` as the controller does for this rollout: pod-template hashes of the
    stable and the canary (Latest) ReplicaSets, and fieldRefs into the Rollout itself."""

    rollout: Mapping[str, Any]
    stable_hash: str
    canary_hash: str

    def __call__(self, name: str, value_from: Mapping[str, Any]) -> str:
        if "podTemplateHashValue" in value_from:
            which = value_from["podTemplateHashValue"]
            if which == "Stable":
                return self.stable_hash
            if which == "Latest":
                return self.canary_hash
            raise AnalysisSpecError(f"args.{name}: podTemplateHashValue {which!r} is invalid")
        field_ref = value_from.get("fieldRef")
        if isinstance(field_ref, Mapping) and "fieldPath" in field_ref:
            return field_path_value(self.rollout, str(field_ref["fieldPath"]))
        if "secretKeyRef" in value_from:
            raise RehearsalUnsupported(
                f"args.{name}: secretKeyRef cannot be resolved without a cluster"
            )
        raise AnalysisSpecError(f"args.{name}: unsupported valueFrom {dict(value_from)!r}")


# ---------------------------------------------------------------------------------------------
# Steps


_STEP_KINDS = (
    "setWeight",
    "pause",
    "analysis",
    "experiment",
    "setCanaryScale",
    "setHeaderRoute",
    "setMirrorRoute",
    "plugin",
)
# Steps that only shape traffic in ways a two-process rehearsal has no equivalent for.
_NO_EFFECT_STEPS = ("setCanaryScale", "setHeaderRoute", "setMirrorRoute", "plugin")


@dataclass(frozen=True)
class Step:
    """One canary step as read from the Rollout: its kind (one of `_STEP_KINDS`, or "" when the
    step is not exactly one kind), its body, and why the controller would refuse it (or None)."""

    index: int
    kind: str
    body: Any
    problem: str | None = None

    @property
    def field(self) -> str:
        return f"spec.strategy.canary.steps[{self.index}]"

    def describe(self) -> str:
        if self.kind == "setWeight":
            return f"setWeight {self.body}"
        if self.kind == "pause":
            duration = (self.body or {}).get("duration")
            if duration is None:
                return "pause (manual gate)"
            # an int (or a digits-only string) means seconds
            return f"pause {duration}s" if str(duration).isdigit() else f"pause {duration}"
        if self.kind == "analysis":
            return "analysis " + ", ".join(_template_names(self.body))
        return self.kind


def _template_names(analysis: Mapping[str, Any]) -> list[str]:
    return [str(t.get("templateName")) for t in analysis.get("templates") or []]


def read_steps(rollout: Mapping[str, Any]) -> list[Step]:
    """The one reader of a Rollout's canary steps, for the rehearsal and `make manifests` alike.

    It never raises: a step the controller would refuse keeps its `problem`, so `make manifests`
    can report it with its field and the rehearsal (`parse_steps`) can refuse it. A Rollout
    without a canary strategy has no steps."""
    strategy = (rollout.get("spec") or {}).get("strategy") or {}
    canary = strategy.get("canary") if isinstance(strategy, Mapping) else None
    if not isinstance(canary, Mapping):
        return []
    raw_steps = canary.get("steps") or []
    if not isinstance(raw_steps, list):
        return [Step(0, "", raw_steps, "spec.strategy.canary.steps must be a list")]
    return [_read_step(index, raw) for index, raw in enumerate(raw_steps)]


def _read_step(index: int, raw: Any) -> Step:
    kinds = [key for key in raw if key in _STEP_KINDS] if isinstance(raw, Mapping) else []
    if len(kinds) != 1:
        return Step(index, "", raw, f"expected exactly one step kind, got {raw!r}")
    kind = kinds[0]
    body = raw[kind]
    if kind == "setWeight":
        if isinstance(body, bool) or not isinstance(body, int) or not 0 <= body <= 100:
            return Step(index, kind, body, "setWeight must be an int in 0..100")
    if kind == "pause":
        if not isinstance(body or {}, Mapping):
            return Step(index, kind, body, "pause must be a mapping ({} or {duration: ...})")
        duration = (body or {}).get("duration")
        if duration is not None:
            try:
                if pause_seconds(duration) < 0:
                    raise ValueError("negative")
            except ValueError:
                return Step(index, kind, body, f"invalid pause duration {duration!r}")
    if kind == "analysis":
        if not isinstance(body, Mapping):
            return Step(index, kind, body, "analysis step must be a mapping")
        if not _template_names(body):
            return Step(index, kind, body, "analysis step without templates")
    return Step(index, kind, body)


def parse_steps(rollout: Mapping[str, Any]) -> list[Step]:
    """`read_steps` for the rehearsal: the first step it cannot walk is a tool error."""
    _canary(rollout)
    steps = read_steps(rollout)
    for step in steps:
        if step.problem is not None:
            raise RolloutSpecError(f"step {step.index}: {step.problem}")
        if step.kind == "experiment":
            raise RehearsalUnsupported(f"step {step.index}: experiment steps cannot be rehearsed")
    return steps


def _canary(rollout: Mapping[str, Any]) -> Mapping[str, Any]:
    if rollout.get("kind") != "Rollout":
        raise RolloutSpecError(f"expected a Rollout, got kind {rollout.get('kind')!r}")
    canary = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary")
    if not isinstance(canary, Mapping):
        raise RolloutSpecError("the Rollout has no canary strategy (spec.strategy.canary)")
    return canary


def find_templates(
    analysis: Mapping[str, Any], templates: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The (Cluster)AnalysisTemplates an analysis block references, from the rendered manifests,
    with the templates those reference in their own `spec.templates` (nested, any depth), each
    kept once by name: namespaced ones first, then cluster-scoped ones, as the controller
    (v1.8) flattens them."""
    found: dict[str, list[Mapping[str, Any]]] = {
        "AnalysisTemplate": [],
        "ClusterAnalysisTemplate": [],
    }

    def visit(refs: Sequence[Mapping[str, Any]], trail: tuple[str, ...]) -> None:
        for ref in refs:
            kind = "ClusterAnalysisTemplate" if ref.get("clusterScope") else "AnalysisTemplate"
            name = ref.get("templateName")
            if f"{kind}/{name}" in trail:
                raise RolloutSpecError(f"{kind} {name!r} references itself through {trail}")
            matches = [
                t
                for t in templates
                if t.get("kind") == kind and (t.get("metadata") or {}).get("name") == name
            ]
            if not matches:
                raise RolloutSpecError(f"{kind} {name!r} is not in the rendered manifests")
            found[kind].append(matches[0])
            nested = (matches[0].get("spec") or {}).get("templates") or []
            visit(nested, trail + (f"{kind}/{name}",))

    visit(analysis.get("templates") or [], ())
    unique: list[Mapping[str, Any]] = []
    for kind in ("AnalysisTemplate", "ClusterAnalysisTemplate"):
        seen: set[str] = set()
        for template in found[kind]:
            name = str((template.get("metadata") or {}).get("name"))
            if name not in seen:
                seen.add(name)
                unique.append(template)
    return unique


# ---------------------------------------------------------------------------------------------
# Replicas: without traffic routing, a weight is a replica count


def _int_or_percent(value: Any, total: int, round_up: bool, default: str) -> int:
    text = str(default if value is None else value)
    if text.endswith("%"):
        exact = total * float(text[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def max_surge(rollout: Mapping[str, Any], replicas: int) -> int:
    """The canary's maxSurge (default 25%, rounded up), as the controller resolves it."""
    canary = _canary(rollout)
    surge = _int_or_percent(canary.get("maxSurge"), replicas, True, "25%")
    unavailable = _int_or_percent(canary.get("maxUnavailable"), replicas, False, "25%")
    return surge if surge or unavailable else 0


def replica_split(replicas: int, weight: int, surge: int) -> tuple[int, int]:
    """(canary, stable) pods the controller aims at for `weight` without traffic routing: the
    count (with one surge pod when allowed) whose share is closest to the weight, the larger
    canary on a tie, never 0 canary pods for a weight of 1-99 on two pods or more (v1.8)."""
    if replicas == 0:
        return 0, 0
    exact = replicas * weight / 100
    ceiling, floor = math.ceil(exact), math.floor(exact)
    zero_allowed = weight in (0, 100) or (replicas == 1 and surge == 0)

    def tied(total: int) -> bool:
        return math.modf(total * weight / 100)[0] == 0.5

    options: list[tuple[int, int]] = []
    if ceiling < replicas or zero_allowed:
        options.append((ceiling, replicas))
    if not tied(replicas) and (floor != 0 or zero_allowed):
        options.append((floor, replicas))
    if surge > 0:
        options.append((ceiling, replicas + 1))
        if not tied(replicas + 1) and (floor != 0 or zero_allowed):
            options.append((floor, replicas + 1))
    if not options:
        return 0, replicas
    best = options[0]
    for option in options[1:]:
        if abs(option[0] * 100 / option[1] - weight) < abs(best[0] * 100 / best[1] - weight):
            best = option
    return best[0], best[1] - best[0]


# ---------------------------------------------------------------------------------------------
# The driver


WeightSetter = Callable[[float], None]
EventSink = Callable[[Event], None]


class CanaryRehearsal:
    """Plays one rollout of `rollout` (a rendered Rollout dict) to a verdict.

    `query` answers Prometheus queries, `clock` supplies time (FakeClock in tests), `set_weight`
    is called with the canary's share at every setWeight and on abort/promotion, `on_event` sees
    every timeline event as it happens (the CLI prints them). `max_seconds` bounds the whole
    rehearsal in clock time; an inline analysis with an indefinite metric would otherwise block
    forever, exactly as it would in the cluster.
    """

    def __init__(
        self,
        rollout: Mapping[str, Any],
        templates: Sequence[Mapping[str, Any]],
        query: QueryFunction,
        clock: Clock,
        *,
        time_factor: float = 60.0,
        stable_hash: str = "stable",
        canary_hash: str = "canary",
        set_weight: WeightSetter | None = None,
        on_event: EventSink | None = None,
        manual_gates: Literal["pass", "stop"] = "pass",
        max_seconds: float = 600.0,
        default_address: str | None = None,
        min_pause_seconds: float = 0.0,
        first_deploy: bool = False,
    ) -> None:
        if time_factor <= 0:
            raise ValueError("time_factor must be > 0")
        self.rollout = rollout
        self.templates = templates
        self.query = query
        self.clock = clock
        self.time_factor = time_factor
        self.args = RolloutArgs(rollout, stable_hash, canary_hash)
        self.set_weight_callback = set_weight
        self.on_event = on_event
        self.manual_gates = manual_gates
        self.max_seconds = max_seconds
        self.default_address = default_address
        # With real Prometheus, a scaled pause shorter than two scrapes leaves the canary without
        # a rate() at all; the orchestrator floors pauses there and the timeline says so.
        self.min_pause_seconds = min_pause_seconds
        # No stable ReplicaSet yet: the controller promotes at once, skipping steps and analysis.
        self.first_deploy = first_deploy
        # Without traffic routing the share of requests is the share of pods (replica_split);
        # with routing, or when the replica count is unknown, it is the weight itself.
        routed = bool(_canary(rollout).get("trafficRouting"))
        replicas = int((rollout.get("spec") or {}).get("replicas") or 1)  # the controller's default
        self.replicas = None if routed else replicas
        self.steps = parse_steps(rollout)
        canary = _canary(rollout)
        self.background: Mapping[str, Any] | None = canary.get("analysis")
        self.events: list[Event] = []
        self.records: list[RunRecord] = []
        self.weight = 0
        self.step_index = 0
        self.start = 0.0
        self.gates_passed: list[int] = []
        # Resolve every referenced template now: a missing one is a tool error before any load.
        for step in self.steps:
            if step.kind == "analysis":
                find_templates(step.body, templates)
        if self.background is not None:
            find_templates(self.background, templates)

    # -- events ---------------------------------------------------------------------------

    def _emit(self, kind: Any, text: str, **fields: str) -> None:
        step = self.step_index if self.step_index < len(self.steps) else None
        event = Event(
            round(self.clock.now() - self.start, 3), step, self.weight, kind, text, **fields
        )
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def _set_weight(self, weight: int, force: bool = False) -> None:
        # The first call always goes out: it tells the load generator where the split starts.
        if weight == self.weight and not force:
            return
        self.weight = weight
        share = float(weight)
        if self.replicas is not None and 0 < weight < 100:
            canary, stable = replica_split(
                self.replicas, weight, max_surge(self.rollout, self.replicas)
            )
            share = 100.0 * canary / (canary + stable)
            self._emit(
                "note",
                f"setWeight {weight} without traffic routing: {canary} canary pod(s) beside"
                f" {stable} stable ({share:.0f}% of requests)",
            )
        if self.set_weight_callback is not None:
            self.set_weight_callback(share)

    # -- runs -----------------------------------------------------------------------------

    def _start_run(self, label: str, step: int | None, analysis: Mapping[str, Any]) -> RunRecord:
        templates = find_templates(analysis, self.templates)
        names = tuple(_template_names(analysis))
        spec: Any
        try:
            spec = run_spec_from_templates(
                templates,
                analysis.get("args") or [],
                self.args,
                analysis.get("dryRun") or [],
                analysis.get("measurementRetention") or [],
            )
        except AnalysisSpecError as exc:
            spec = exc
        name = f"{label.replace(' ', '-')}-{'-'.join(names)}"
        run = AnalysisRun(
            name,
            spec,
            self.query,
            self.clock,
            time_factor=self.time_factor,
            default_address=self.default_address,
        )
        record = RunRecord(label, step, run, names)
        self.records.append(record)
        self._emit("run", f"{label}: AnalysisRun started ({', '.join(names)})", run=label)
        return record

    def _reconcile(self, record: RunRecord) -> None:
        before = record.run.phase
        for measurement in record.run.reconcile():
            self._measured(record, measurement)
        self._report_phase(record, before)

    def _measured(self, record: RunRecord, measurement: Measurement) -> None:
        value = measurement.value or "-"
        text = f"{record.label}: {measurement.metric} = {value} -> {measurement.phase}"
        if measurement.message:
            text += f" ({measurement.message})"
        self._emit(
            "measurement",
            text,
            run=record.label,
            metric=measurement.metric,
            value=measurement.value,
            phase=str(measurement.phase),
        )

    def _report_phase(self, record: RunRecord, before: Phase) -> None:
        run = record.run
        if run.phase != before and run.phase.completed:
            text = f"{record.label}: AnalysisRun {run.phase}"
            if run.message:
                text += f" ({run.message})"
            self._emit("run", text, run=record.label, phase=str(run.phase))

    def _verdict_from_run(self, record: RunRecord, step: int | None) -> Verdict | None:
        run = record.run
        if not run.phase.completed or run.phase == Phase.SUCCESSFUL:
            return None
        culprits = run.failing_metrics
        metric = culprits[0].name if culprits else ""
        if culprits:
            reason = "; ".join(
                f"{run.phase}: {c.message}" if i == 0 else f"{c.name}: {run.phase}: {c.message}"
                for i, c in enumerate(culprits)
            )
        else:
            reason = f"{run.phase}: {run.message}"
        outcome = Outcome.PAUSED if run.phase == Phase.INCONCLUSIVE else Outcome.ABORTED
        return Verdict(
            outcome, step, metric, reason, record.label, metrics=tuple(c.name for c in culprits)
        )

    # -- main loop ------------------------------------------------------------------------

    def validation_error(self) -> str | None:
        """Why the controller would mark the Rollout InvalidSpec, or None.

        What its Rollout validation checks (v1.8), for every inline analysis step: the run can be
        built from the templates and the step's args (every arg resolved, no duplicate metric);
        each template's metrics resolve their `{{...}}` against the template's own args (values
        stood in for); and every metric ends (a count, or no interval). A background analysis
        needs each value-less template arg supplied by the Rollout. Other mistakes (a count
        without an interval, a bad condition) pass validation and make the run Error instead."""
        for step in self.steps:
            if step.kind != "analysis":
                continue
            templates = find_templates(step.body, self.templates)
            try:
                run_spec_from_templates(templates, step.body.get("args") or [], self.args)
                for template in templates:
                    spec = template.get("spec") or {}
                    args = {str(a.get("name")): "dummy-value" for a in spec.get("args") or []}
                    args.update(
                        {
                            str(a.get("name")): str(a["value"])
                            for a in spec.get("args") or []
                            if a.get("value") is not None
                        }
                    )
                    for metric in spec.get("metrics") or []:
                        resolved = template_metric(metric, args)
                        if resolved.get("interval") and not resolved.get("count"):
                            return (
                                f"step {step.index}: metric {resolved.get('name')} runs"
                                " indefinitely (an inline analysis needs a count)"
                            )
            except AnalysisSpecError as exc:
                return f"step {step.index}: {exc}"
        if self.background is not None:
            supplied = {str(a.get("name")) for a in self.background.get("args") or []}
            for template in find_templates(self.background, self.templates):
                for arg in (template.get("spec") or {}).get("args") or []:
                    if arg.get("value") is None and arg.get("valueFrom") is None:
                        if arg.get("name") not in supplied:
                            name = (template.get("metadata") or {}).get("name")
                            return f"background analysis: {name}: arg {arg.get('name')} missing"
        return None

    def run(self) -> RehearsalResult:
        self.start = self.clock.now()
        invalid = self.validation_error()
        if invalid is not None or self.first_deploy:
            early = (
                Verdict(Outcome.INVALID, reason=invalid)
                if invalid is not None
                else Verdict(Outcome.PROMOTED, reason="first deploy: every step skipped")
            )
            self._emit("verdict", early.headline(), phase=str(early.outcome))
            return RehearsalResult(
                early, self.events, [], 0.0, self.time_factor, [s.describe() for s in self.steps]
            )
        deadline = self.start + self.max_seconds
        self._set_weight(0, force=True)
        background: RunRecord | None = None
        starting_step = int((self.background or {}).get("startingStep") or 0)
        step_run: RunRecord | None = None
        pause_until: float | None = None
        entered = -1
        verdict: Verdict | None = None

        while verdict is None:
            if self.step_index >= len(self.steps):
                break
            step = self.steps[self.step_index]
            if background is None and self.background is not None:
                if self.step_index >= starting_step:
                    background = self._start_run("background", None, self.background)
            if entered != self.step_index:
                entered = self.step_index
                verdict = self._enter(step)
                if verdict is not None:
                    break
                if step.kind == "setWeight" or step.kind in _NO_EFFECT_STEPS:
                    self.step_index += 1
                    continue
                if step.kind == "pause":
                    duration = (step.body or {}).get("duration")
                    if duration is None:
                        # a passed manual gate: the human promotes at once
                        self.step_index += 1
                        continue
                    pause_until = self.clock.now() + self._scaled_pause(step, duration)
                if step.kind == "analysis":
                    step_run = self._start_run(f"step {step.index}", step.index, step.body)

            active = [r for r in (background, step_run) if r is not None]
            for record in active:
                self._reconcile(record)
            if background is not None:
                verdict = self._verdict_from_run(background, self.step_index)
                if verdict is not None:
                    break
            if step.kind == "analysis" and step_run is not None:
                verdict = self._verdict_from_run(step_run, step.index)
                if verdict is not None:
                    break
                if step_run.run.phase == Phase.SUCCESSFUL:
                    step_run = None
                    self.step_index += 1
                    continue
            if step.kind == "pause" and pause_until is not None:
                if self.clock.now() >= pause_until:
                    self._emit("note", f"step {step.index}: pause over")
                    pause_until = None
                    self.step_index += 1
                    continue

            wakes = [r.run.next_reconcile_at() for r in active]
            candidates = [t for t in wakes if t is not None]
            if pause_until is not None:
                candidates.append(pause_until)
            if not candidates:
                raise RehearsalTimeout(
                    f"step {step.index} ({step.describe()}) waits for nothing that can happen"
                )
            wake = min(candidates)
            if wake > deadline:
                raise RehearsalTimeout(
                    f"no verdict within {self.max_seconds:g} s: step {step.index} "
                    f"({step.describe()}) is still running (an indefinite metric in an inline "
                    "analysis never completes; give it a count)"
                )
            self.clock.sleep_until(wake)

        if verdict is None:
            verdict = self._promote(background)
        else:
            self._end(verdict, background, step_run)
        self._emit("verdict", verdict.headline(), phase=str(verdict.outcome))
        return RehearsalResult(
            verdict,
            self.events,
            self.records,
            round(self.clock.now() - self.start, 3),
            self.time_factor,
            [step.describe() for step in self.steps],
        )

    def _scaled_pause(self, step: Step, duration: Any) -> float:
        scaled = pause_seconds(duration) / self.time_factor
        if scaled < self.min_pause_seconds:
            self._emit(
                "note",
                f"step {step.index}: pause {scaled:g} s raised to {self.min_pause_seconds:g} s "
                "(two scrape intervals)",
            )
            return self.min_pause_seconds
        return scaled

    def _enter(self, step: Step) -> Verdict | None:
        self._emit("step", f"step {step.index}: {step.describe()}")
        if step.kind == "setWeight":
            self._set_weight(int(step.body))
            self._emit("note", f"canary weight {self.weight}%")
        elif step.kind in _NO_EFFECT_STEPS:
            self._emit("note", f"step {step.index}: {step.kind} has no effect in a rehearsal")
        elif step.kind == "pause" and (step.body or {}).get("duration") is None:
            if self.manual_gates == "stop":
                return Verdict(Outcome.PAUSED, step.index, reason="manual gate")
            self.gates_passed.append(step.index)
            self._emit(
                "note",
                f"step {step.index}: manual gate passed by the rehearsal (a human promotes here)",
            )
        return None

    def _promote(self, background: RunRecord | None) -> Verdict:
        self._set_weight(100)
        if background is not None:
            before = background.run.phase
            background.run.terminate()
            self._report_phase(background, before)
        return Verdict(Outcome.PROMOTED, gates_passed=tuple(self.gates_passed))

    def _end(self, verdict: Verdict, *records: RunRecord | None) -> None:
        if verdict.outcome == Outcome.ABORTED:
            self._set_weight(0)
            self._emit("note", "rollout aborted: traffic back to stable (RolloutAborted)")
            for record in records:
                if record is not None and not record.run.phase.completed:
                    before = record.run.phase
                    record.run.terminate()
                    self._report_phase(record, before)
        elif verdict.reason != "manual gate":
            self._emit(
                "note", "rollout paused: waiting for a human (kubectl argo rollouts promote)"
            )
