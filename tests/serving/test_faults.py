"""Fault injection does exactly what a rehearsal needs, and only when asked."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from ml.serving.config import FaultConfig
from ml.serving.faults import FaultInjector
from ml.serving.model import LoadedModel

from .conftest import AsgiClient, digits_rows, make_app, metric_value


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.1, 0.25, 1 / 3, 0.5, 1.0])
def test_error_rate_is_exact_in_every_window(rate: float) -> None:
    injector = FaultInjector(FaultConfig(error_rate=rate))
    failures = [injector.should_fail() for _ in range(3000)]
    assert sum(failures) == round(rate * 3000)
    if 0 < rate < 1:
        window = int(round(1 / rate)) * 10
        for start in range(0, 3000 - window, window):
            assert abs(sum(failures[start : start + window]) - rate * window) <= 1


def test_injected_errors_are_503_and_count_against_success(model: LoadedModel) -> None:
    client = AsgiClient(make_app(model, faults=FaultConfig(error_rate=0.1)))
    body = {"instances": digits_rows(1).tolist()}
    statuses = [client.post("/predict", body).status for _ in range(100)]
    assert statuses.count(503) == 10 and statuses.count(200) == 90
    text = client.get("/metrics").body.decode()
    assert metric_value(text, "inference_requests_total", endpoint="predict", code="503") == 10
    assert metric_value(text, "inference_successes_total", endpoint="predict") == 90


def test_injected_error_body_says_it_is_injected(model: LoadedModel) -> None:
    client = AsgiClient(make_app(model, faults=FaultConfig(error_rate=1.0)))
    response = client.post("/predict", {"instances": digits_rows(1).tolist()})
    assert response.status == 503 and "injected fault" in response.json()["error"]
    assert client.get("/v2/health/ready").status == 200  # health is not affected


def test_latency_is_added_without_blocking_other_requests(model: LoadedModel) -> None:
    client = AsgiClient(make_app(model, faults=FaultConfig(latency_ms=200.0)))
    body = {"instances": digits_rows(1).tolist()}

    async def twenty_at_once() -> list[int]:
        responses = await asyncio.gather(
            *(client.arequest("POST", "/predict", body) for _ in range(20))
        )
        return [r.status for r in responses]

    started = time.perf_counter()
    assert asyncio.run(twenty_at_once()) == [200] * 20
    elapsed = time.perf_counter() - started
    assert 0.2 <= elapsed < 1.5  # concurrent sleeps, not 20 x 200 ms
    text = client.get("/metrics").body.decode()
    fast = metric_value(
        text, "inference_request_duration_seconds_bucket", endpoint="predict", le="0.1"
    )
    assert fast == 0


def test_shuffle_degrades_predictions_but_keeps_the_input_summary(model: LoadedModel) -> None:
    rows = digits_rows(200, seed=2)
    healthy = AsgiClient(make_app(model))
    degraded = AsgiClient(make_app(model, faults=FaultConfig(degrade="shuffle")))
    good = healthy.post("/predict", {"instances": rows.tolist()}).json()
    bad = degraded.post("/predict", {"instances": rows.tolist()}).json()
    agreement = np.mean(np.array(good["predictions"]) == np.array(bad["predictions"]))
    assert agreement < 0.9  # random rows, linear model; the real model: test_pipeline_parity
    healthy_text = healthy.get("/metrics").body.decode()
    degraded_text = degraded.get("/metrics").body.decode()
    intensity = "inference_input_scaled_mean_sum"
    assert metric_value(healthy_text, intensity) == pytest.approx(
        metric_value(degraded_text, intensity)
    )


def test_shuffle_is_a_fixed_derangement() -> None:
    injector = FaultInjector(FaultConfig(degrade="shuffle"))
    rows = np.arange(64, dtype=np.float32)[None, :]
    once, twice = injector.degrade(rows), injector.degrade(rows)
    np.testing.assert_array_equal(once, twice)
    assert not np.any(once == rows) and sorted(once[0].tolist()) == rows[0].tolist()


def test_constant_answers_the_same_for_every_input(model: LoadedModel) -> None:
    client = AsgiClient(make_app(model, faults=FaultConfig(degrade="constant")))
    body = client.post("/predict", {"instances": digits_rows(50, seed=4).tolist()}).json()
    assert len(set(body["predictions"])) == 1
    assert len({tuple(p) for p in body["probabilities"]}) == 1


def test_no_fault_means_untouched_rows() -> None:
    injector = FaultInjector(FaultConfig())
    rows = digits_rows(2)
    assert injector.degrade(rows) is rows and not injector.should_fail() and not injector.active
