"""The Prometheus metric contract of the service (docs/CONTRACTS.md), kept cheap on the hot path.

prometheus_client's metric objects take a lock and walk label dicts on every update (~1-2 us
each, six of them per request). The service mutates its counters only from the event-loop
thread, so plain Python numbers suffice; a Collector turns them into metric families when
``/metrics`` is scraped, and prometheus_client still writes the exposition format.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
INPUT_MEAN_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.8, 1.0)
ENDPOINTS = ("predict", "infer")
RELOAD_OUTCOMES = ("success", "failure")


class Histogram:
    """Bucket counts (non-cumulative; the last is +Inf) and a sum; le-semantics as Prometheus."""

    __slots__ = ("bounds", "_bounds_array", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self._bounds_array = np.asarray(self.bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, values: npt.NDArray[np.floating]) -> None:
        """Vectorised for batches; a single value takes the scalar path (numpy costs ~us/call)."""
        if values.size == 1:
            self.observe(float(values.flat[0]))
            return
        index = np.searchsorted(self._bounds_array, values, side="left")
        for bucket, count in enumerate(np.bincount(index, minlength=len(self.counts)).tolist()):
            self.counts[bucket] += count
        self.total += float(values.sum())

    def cumulative(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            running += count
            out.append((_go_float(bound), float(running)))
        return out


class ServiceMetrics:
    """All metrics of one service instance, exposed from its own registry."""

    def __init__(self, process_metrics: bool = True) -> None:
        self.requests: dict[tuple[str, str], int] = {(e, "200"): 0 for e in ENDPOINTS}
        self.in_flight = 0
        self.successes: dict[str, int] = {e: 0 for e in ENDPOINTS}
        self.latency: dict[str, Histogram] = {e: Histogram(LATENCY_BUCKETS) for e in ENDPOINTS}
        self.predictions: list[int] = []
        self.confidence = Histogram(CONFIDENCE_BUCKETS)
        self.input_mean = Histogram(INPUT_MEAN_BUCKETS)
        self.model_info: tuple[str, str, str] = ("", "", "")
        self.reloads: dict[str, int] = {o: 0 for o in RELOAD_OUTCOMES}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        if process_metrics:
            ProcessCollector(registry=self.registry)

    def set_model(self, name: str, version: str, git_commit: str, num_classes: int) -> None:
        self.model_info = (name, version, git_commit)
        if len(self.predictions) < num_classes:
            self.predictions.extend([0] * (num_classes - len(self.predictions)))

    def record_request(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        if 200 <= status < 300:
            self.successes[endpoint] += 1
        self.latency[endpoint].observe(seconds)

    def record_prediction(self, label: int, confidence: float, input_mean: float) -> None:
        """One row: its predicted label, top-class probability and its values' scaled mean."""
        if label >= len(self.predictions):
            self.predictions.extend([0] * (label + 1 - len(self.predictions)))
        self.predictions[label] += 1
        self.confidence.observe(confidence)
        self.input_mean.observe(input_mean)

    def record_batch(
        self,
        labels: npt.NDArray[np.int64],
        confidence: npt.NDArray[np.floating],
        input_mean: npt.NDArray[np.floating],
    ) -> None:
        """Many rows at once (vectorised)."""
        counts = np.bincount(labels, minlength=len(self.predictions)).tolist()
        if len(counts) > len(self.predictions):
            self.predictions.extend([0] * (len(counts) - len(self.predictions)))
        for label, count in enumerate(counts):
            self.predictions[label] += count
        self.confidence.observe_many(confidence)
        self.input_mean.observe_many(input_mean)

    def record_reload(self, success: bool) -> None:
        self.reloads["success" if success else "failure"] += 1

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        requests = CounterMetricFamily(
            "inference_requests_total",
            "Inference requests by endpoint and HTTP status code.",
            labels=["endpoint", "code"],
        )
        for (endpoint, code), value in sorted(m.requests.items()):
            requests.add_metric([endpoint, code], value)
        yield requests
        yield _counter(
            "inference_successes_total",
            "Inference requests answered 2xx.",
            "endpoint",
            m.successes.items(),
        )
        latency = HistogramMetricFamily(
            "inference_request_duration_seconds",
            "Inference request latency from first byte received to response sent.",
            labels=["endpoint"],
        )
        for endpoint, histogram in m.latency.items():
            latency.add_metric([endpoint], histogram.cumulative(), histogram.total)
        yield latency
        yield _counter(
            "inference_predictions_total",
            "Predicted labels.",
            "predicted_class",
            ((str(label), count) for label, count in enumerate(m.predictions)),
        )
        yield _histogram(
            "inference_prediction_confidence",
            "Top-class probability of each prediction.",
            m.confidence,
        )
        yield _histogram(
            "inference_input_scaled_mean",
            "Mean of each input row's values scaled to [0, 1] by the model's declared input"
            " ranges (input drift).",
            m.input_mean,
        )
        yield GaugeMetricFamily(
            "inference_requests_in_flight",
            "Inference requests received and not yet answered (beyond the contract).",
            value=m.in_flight,
        )
        info = GaugeMetricFamily(
            "inference_model_info",
            "The model being served (value 1).",
            labels=["model_name", "model_version", "git_commit"],
        )
        if m.model_info[0]:
            info.add_metric(list(m.model_info), 1.0)
        yield info
        yield _counter(
            "inference_model_reloads_total",
            "Hot reloads by outcome.",
            "outcome",
            m.reloads.items(),
        )


def _counter(
    name: str, documentation: str, label: str, values: Iterable[tuple[str, int]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for label_value, value in values:
        family.add_metric([label_value], value)
    return family


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], histogram.cumulative(), histogram.total)
    return family


def _go_float(value: float) -> str:
    """The ``le`` label as prometheus_client writes it (``0.5``, ``1.0``, ``+Inf``)."""
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))
