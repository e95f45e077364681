"""The service's bounded input sample (ml/serving/sampling.py) and its /monitoring/sample route."""

from __future__ import annotations

import numpy as np
import pytest

from ml.serving.config import ConfigError, ServingConfig
from ml.serving.model import LoadedModel
from ml.serving.sampling import InputSampler
from tests.serving.conftest import AsgiClient, digits_rows, make_app

SAMPLE_TOKEN = "sample-token-0123456789"
AUTH = {"authorization": f"Bearer {SAMPLE_TOKEN}"}


def stream(sampler: InputSampler, total: int, batch_sizes: list[int], now: float = 0.0) -> None:
    """Offer rows whose single feature is their stream index, in batches of the given sizes."""
    index = 0
    sizes = iter(batch_sizes * (total // max(1, sum(batch_sizes)) + 1))
    while index < total:
        size = min(next(sizes), total - index)
        rows = np.arange(index, index + size, dtype=np.float32).reshape(-1, 1)
        sampler.offer(rows, np.arange(index, index + size, dtype=np.int64), now)
        index += size


@pytest.mark.parametrize("batches", [[1], [1, 7, 64, 3]], ids=["single-rows", "mixed-batches"])
def test_every_row_is_equally_likely_to_be_kept(batches: list[int]) -> None:
    """Inclusion frequency per tenth of the stream is flat (Algorithm L is uniform)."""
    total, capacity, runs = 3000, 100, 100
    counts = np.zeros(10)
    for seed in range(runs):
        sampler = InputSampler(capacity, 1, 3600.0, now=0.0, now_unix=0.0, seed=seed)
        stream(sampler, total, batches)
        window = sampler.snapshot(1.0)["windows"][-1]
        kept = window["rows"][:, 0].astype(int)
        assert len(set(kept.tolist())) == capacity, "a row was kept twice"
        assert np.array_equal(window["labels"], kept), "a row lost its label"
        counts += np.bincount(kept * 10 // total, minlength=10)
    expected = runs * capacity / 10
    # each tenth holds 1,000 of 10,000 kept rows; binomial sd ~30: allow 5 sd
    assert np.all(np.abs(counts - expected) < 150), counts


def test_memory_is_fixed_and_fewer_rows_than_capacity_are_all_kept() -> None:
    sampler = InputSampler(64, 1, 3600.0, now=0.0, now_unix=1000.0, seed=1)
    stream(sampler, 40, [3])
    window = sampler.snapshot(5.0)["windows"][0]
    assert window["seen"] == 40
    assert window["rows"][:, 0].tolist() == list(range(40))
    stream(sampler, 100_000, [50])
    snapshot = sampler.snapshot(5.0)
    assert snapshot["windows"][0]["rows"].shape == (64, 1)
    assert snapshot["windows"][0]["seen"] == 100_040
    assert snapshot["capacity"] == 64


def test_windows_rotate_on_the_request_clock_and_stale_windows_are_dropped() -> None:
    sampler = InputSampler(10, 1, 60.0, now=100.0, now_unix=5000.0, seed=2)
    stream(sampler, 5, [1], now=110.0)
    stream(sampler, 3, [1], now=170.0)  # 70 s after start: the first window is complete
    windows = sampler.snapshot(175.0)["windows"]
    assert [w["seen"] for w in windows] == [5, 3]
    assert windows[0]["start_unix"] == 5000.0 and windows[0]["end_unix"] == 5060.0
    assert windows[1]["start_unix"] == 5060.0 and windows[1]["end_unix"] == 5075.0
    # two full windows of silence: the previous window is no longer recent
    windows = sampler.snapshot(300.0)["windows"]
    assert [w["seen"] for w in windows] == [0]
    assert windows[0]["start_unix"] == 5180.0


def test_invalid_sampler_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        InputSampler(0, 1, 60.0, now=0.0, now_unix=0.0)
    with pytest.raises(ValueError, match="window_s"):
        InputSampler(1, 1, 0.0, now=0.0, now_unix=0.0)


def test_sample_route_returns_the_rows_answered_with_their_predicted_labels(
    model: LoadedModel,
) -> None:
    client = AsgiClient(make_app(model, sample_token=SAMPLE_TOKEN, input_sample_size=32))
    rows = digits_rows(5, seed=3)
    assert client.post("/predict", {"instances": rows[:1].tolist()}).status == 200
    assert client.post("/predict", {"instances": rows[1:].tolist()}).status == 200
    assert client.post("/predict", b"{broken").status == 400  # refused rows are not sampled
    response = client.request("GET", "/monitoring/sample", headers=AUTH)
    assert response.status == 200
    document = response.json()
    assert document["model_name"] == "digits-classifier" and document["model_version"] == "7"
    assert document["features"] == 64 and document["capacity"] == 32
    (window,) = document["windows"]
    assert window["seen"] == 5
    assert np.array_equal(np.asarray(window["rows"], dtype=np.float32), rows)
    assert window["labels"] == model.predict(rows)[1].tolist()


def test_sample_route_samples_raw_inputs_even_when_a_fault_degrades_them(
    model: LoadedModel,
) -> None:
    from ml.serving.config import FaultConfig

    service = make_app(model, sample_token=SAMPLE_TOKEN, faults=FaultConfig(degrade="constant"))
    client = AsgiClient(service)
    rows = digits_rows(2, seed=4)
    assert client.post("/predict", {"instances": rows.tolist()}).status == 200
    window = client.request("GET", "/monitoring/sample", headers=AUTH).json()["windows"][0]
    assert np.array_equal(np.asarray(window["rows"], dtype=np.float32), rows)


@pytest.mark.parametrize(
    ("config", "method", "headers", "status", "fragment"),
    [
        ({}, "GET", AUTH, 403, "no SAMPLE_TOKEN"),
        ({"sample_token": SAMPLE_TOKEN}, "GET", {}, 401, "bearer token"),
        ({"sample_token": SAMPLE_TOKEN}, "GET", {"authorization": "Bearer wrong"}, 401, "bearer"),
        ({"sample_token": SAMPLE_TOKEN}, "POST", AUTH, 405, "accepts GET"),
        (
            {"sample_token": SAMPLE_TOKEN, "input_sample_size": 0},
            "GET",
            AUTH,
            404,
            "sampling is off",
        ),
    ],
    ids=["disabled", "no-token", "wrong-token", "post", "sampling-off"],
)
def test_sample_route_refusals(
    model: LoadedModel,
    config: dict[str, object],
    method: str,
    headers: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    client = AsgiClient(make_app(model, **config))
    response = client.request(method, "/monitoring/sample", headers=headers)
    assert response.status == status
    assert fragment in response.json()["error"]


def test_sampling_settings_come_from_the_environment() -> None:
    config = ServingConfig.from_env(
        {"INPUT_SAMPLE_SIZE": "0", "INPUT_SAMPLE_WINDOW_S": "600", "SAMPLE_TOKEN": SAMPLE_TOKEN}
    )
    assert config.input_sample_size == 0
    assert config.input_sample_window_s == 600.0
    assert config.sample_token == SAMPLE_TOKEN
    defaults = ServingConfig.from_env({})
    assert (defaults.input_sample_size, defaults.sample_token) == (1024, None)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"INPUT_SAMPLE_SIZE": "-1"}, "INPUT_SAMPLE_SIZE"),
        ({"INPUT_SAMPLE_SIZE": "many"}, "INPUT_SAMPLE_SIZE"),
        ({"INPUT_SAMPLE_WINDOW_S": "0"}, "INPUT_SAMPLE_WINDOW_S"),
        ({"SAMPLE_TOKEN": "short"}, "SAMPLE_TOKEN"),
    ],
)
def test_bad_sampling_settings_name_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        ServingConfig.from_env(env)
