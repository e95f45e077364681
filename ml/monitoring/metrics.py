"""The drift job's Prometheus metrics: a text file locally, a Pushgateway push in the cluster.

A CronJob lives for seconds, so nothing could scrape it; it pushes its gauges to a Pushgateway
under the grouping key {job, namespace, app}, and Prometheus scrapes that with honor_labels, so
the series carry the app's namespace and app like the service's own (alerts group by them).
The names here are a contract like docs/CONTRACTS.md's: dashboards and alert rules query them,
and tests/monitoring checks every query against ``exposition()``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway

from ml.io import write_text

if TYPE_CHECKING:  # the manifests tool imports this module for the names: keep scipy out of it
    from ml.monitoring.drift import DriftResult
    from ml.monitoring.trigger import Decision

JOB = "drift-monitor"
STATISTICS = ("wasserstein", "psi")
SIGNALS = ("features", "predictions")
ACTIONS = ("none", "skipped", "dry-run", "triggered")

Handler = Callable[[str, str, int, list[tuple[str, str]], bytes], Callable[[], None]]


class DriftMetrics:
    """Gauges of one drift run, in their own registry (never the process-global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.group_score = Gauge(
            "drift_feature_group_score",
            "Mean per-feature drift statistic of a contiguous feature group.",
            ["feature_group", "statistic"],
            registry=r,
        )
        self.drifted_share = Gauge(
            "drift_drifted_features_share",
            "Share of features whose statistic exceeds the threshold.",
            registry=r,
        )
        self.prediction_shift = Gauge(
            "drift_prediction_shift",
            "Jensen-Shannon distance between training labels and live predicted classes.",
            registry=r,
        )
        self.detected = Gauge(
            "drift_detected",
            "1 when the signal is over its threshold with enough live rows, else 0.",
            ["signal"],
            registry=r,
        )
        self.threshold = Gauge(
            "drift_threshold",
            "Configured thresholds: per-feature statistic, drifted share, prediction shift.",
            ["kind"],
            registry=r,
        )
        self.live_rows = Gauge(
            "drift_live_rows", "Live rows compared with the reference.", registry=r
        )
        self.out_of_range = Gauge(
            "drift_input_out_of_range_share",
            "Share of live rows with a value outside the valid input range (data quality).",
            registry=r,
        )
        self.last_run = Gauge(
            "drift_last_run_timestamp_seconds",
            "Unix time the drift job last finished a comparison.",
            registry=r,
        )
        self.retrain_last = Gauge(
            "retrain_last_triggered_timestamp_seconds",
            "Unix time a retraining was last started by the trigger (0: never).",
            registry=r,
        )
        self.retrain_cooldown = Gauge(
            "retrain_cooldown_remaining_seconds",
            "Seconds until the trigger may start another event-driven retraining.",
            registry=r,
        )
        self.retrain_decision = Gauge(
            "retrain_decision",
            "1 for the action the trigger took in this run, 0 for the others.",
            ["action"],
            registry=r,
        )

    def record_drift(self, result: DriftResult, finished_at: float) -> None:
        for group in result.groups:
            self.group_score.labels(group.name, "wasserstein").set(group.wasserstein)
            self.group_score.labels(group.name, "psi").set(group.psi)
        self.drifted_share.set(result.drifted_share)
        self.prediction_shift.set(result.prediction_shift or 0.0)
        for signal in SIGNALS:
            value = result.sufficient_data and result.signals.get(signal, False)
            self.detected.labels(signal).set(1.0 if value else 0.0)
        params = result.params
        self.threshold.labels("feature").set(params.threshold)
        self.threshold.labels("drifted_share").set(params.drifted_share)
        self.threshold.labels("prediction").set(params.prediction_threshold)
        self.live_rows.set(result.live_rows)
        self.out_of_range.set(result.out_of_range_share)
        self.last_run.set(finished_at)

    def record_decision(self, decision: Decision) -> None:
        started = decision.run or decision.last_run
        self.retrain_last.set(0.0 if started is None else started.started_at)
        self.retrain_cooldown.set(decision.cooldown_remaining_s)
        for action in ACTIONS:
            self.retrain_decision.labels(action).set(1.0 if action == decision.action else 0.0)

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def write(self, path: Path) -> None:
        """The node-exporter textfile format (also what `make drift` leaves to read)."""
        write_text(path, self.text())

    def push(self, gateway: str, grouping: dict[str, str], handler: Handler | None = None) -> None:
        """PUT to the Pushgateway: replaces this group's previous values, so no stale series."""
        kwargs: dict[str, Any] = {"grouping_key": grouping, "registry": self.registry}
        if handler is not None:
            kwargs["handler"] = handler
        push_to_gateway(gateway, job=JOB, **kwargs)


def exposition() -> str:
    """Every family the job exports, each labelled series present once, for the name checks."""
    metrics = DriftMetrics()
    metrics.group_score.labels("f00-f07", "wasserstein").set(0.0)
    for signal in SIGNALS:
        metrics.detected.labels(signal).set(0.0)
    metrics.threshold.labels("feature").set(0.1)
    for action in ACTIONS:
        metrics.retrain_decision.labels(action).set(0.0)
    return metrics.text()
