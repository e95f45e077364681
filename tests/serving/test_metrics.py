"""Every metric of the contract (docs/CONTRACTS.md) is exported and moves as requests are served."""

from __future__ import annotations

import re

import numpy as np

from ml.serving.metrics import LATENCY_BUCKETS, Histogram, ServiceMetrics
from ml.serving.model import LoadedModel

from .conftest import AsgiClient, digits_rows, make_app, metric_value

CONTRACT = {
    "inference_requests_total": "counter",
    "inference_successes_total": "counter",
    "inference_request_duration_seconds": "histogram",
    "inference_predictions_total": "counter",
    "inference_prediction_confidence": "histogram",
    "inference_input_scaled_mean": "histogram",
    "inference_model_info": "gauge",
    "inference_model_reloads_total": "counter",
}


def scrape(client: AsgiClient) -> str:
    response = client.get("/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.body.decode()


def test_every_contract_metric_is_exported_with_its_type_before_any_request(
    client: AsgiClient,
) -> None:
    text = scrape(client)
    for name, kind in CONTRACT.items():
        family = name.removesuffix("_total")
        assert re.search(rf"^# TYPE {family}(_total)? {kind}$", text, re.MULTILINE), name
    # series the analyses divide by exist from the start, so rate() has a baseline
    for endpoint in ("predict", "infer"):
        assert f'inference_requests_total{{code="200",endpoint="{endpoint}"}} 0.0' in text
        assert f'inference_successes_total{{endpoint="{endpoint}"}} 0.0' in text
    for label in range(10):
        assert f'inference_predictions_total{{predicted_class="{label}"}} 0.0' in text
    assert (
        'inference_model_info{git_commit="commit-7",model_name="digits-classifier",'
        'model_version="7"} 1.0' in text
    )
    assert "process_resident_memory_bytes" in text


def test_latency_buckets_span_half_a_millisecond_to_five_seconds(client: AsgiClient) -> None:
    text = scrape(client)
    les = re.findall(
        r'inference_request_duration_seconds_bucket\{endpoint="predict",le="([^"]+)"', text
    )
    assert les[0] == "0.0005" and les[-2] == "5.0" and les[-1] == "+Inf"
    assert [float(x) for x in les[:-1]] == list(LATENCY_BUCKETS)


def test_metrics_move_with_successes_errors_classes_and_inputs(
    client: AsgiClient, model: LoadedModel
) -> None:
    rows = digits_rows(6, seed=11)
    _, labels = model.predict(rows)
    probabilities, _ = model.predict(rows)
    assert client.post("/predict", {"instances": rows[:1].tolist()}).status == 200
    assert client.post("/predict", {"instances": rows[1:].tolist()}).status == 200
    infer = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32"}]}
    infer["inputs"][0]["data"] = rows[0].tolist()
    assert client.post("/v2/models/digits-classifier/infer", infer).status == 200
    assert client.post("/predict", b"{bad").status == 400
    assert client.post("/v2/models/nope/infer", infer).status == 404
    text = scrape(client)

    assert metric_value(text, "inference_requests_total", endpoint="predict", code="200") == 2
    assert metric_value(text, "inference_requests_total", endpoint="predict", code="400") == 1
    assert metric_value(text, "inference_requests_total", endpoint="infer", code="200") == 1
    assert metric_value(text, "inference_requests_total", endpoint="infer", code="404") == 1
    assert metric_value(text, "inference_successes_total", endpoint="predict") == 2
    assert metric_value(text, "inference_successes_total", endpoint="infer") == 1
    count = metric_value(text, "inference_request_duration_seconds_count", endpoint="predict")
    assert count == 3  # errors are timed too
    inf = metric_value(
        text, "inference_request_duration_seconds_bucket", endpoint="predict", le="+Inf"
    )
    assert inf == 3
    assert metric_value(text, "inference_request_duration_seconds_sum", endpoint="predict") > 0

    expected = np.bincount(np.concatenate([labels, labels[:1]]), minlength=10)
    for label in range(10):
        got = metric_value(text, "inference_predictions_total", predicted_class=str(label))
        assert got == expected[label], label
    confidence = np.concatenate([probabilities.max(axis=1), probabilities[:1].max(axis=1)])
    assert metric_value(text, "inference_prediction_confidence_count") == 7
    assert abs(metric_value(text, "inference_prediction_confidence_sum") - confidence.sum()) < 1e-4
    top = metric_value(text, "inference_prediction_confidence_bucket", le="1.0")
    assert top == 7
    intensity = np.concatenate([rows, rows[:1]]).mean(axis=1) / 16.0  # the range [0, 16]
    assert metric_value(text, "inference_input_scaled_mean_count") == 7
    assert abs(metric_value(text, "inference_input_scaled_mean_sum") - intensity.sum()) < 1e-4
    below = int((intensity <= 0.5).sum())
    assert metric_value(text, "inference_input_scaled_mean_bucket", le="0.5") == below


def test_histogram_bucket_edges_follow_prometheus_le_semantics() -> None:
    histogram = Histogram([0.1, 0.5])
    for value in (0.1, 0.10001, 0.5, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 1.0), ("0.5", 3.0), ("+Inf", 4.0)]
    batch = Histogram([0.1, 0.5])
    batch.observe_many(np.array([0.1, 0.10001, 0.5, 7.0]))
    assert batch.cumulative() == histogram.cumulative()
    assert batch.total == histogram.total
    single = Histogram([0.1])
    single.observe_many(np.array([0.05], dtype=np.float32))
    assert single.cumulative()[0] == ("0.1", 1.0)


def test_reload_counter_and_model_info_follow_the_served_model() -> None:
    metrics = ServiceMetrics(process_metrics=False)
    metrics.set_model("m", "1", "abc", 3)
    metrics.record_reload(success=False)
    metrics.set_model("m", "2", "def", 12)
    metrics.record_reload(success=True)
    metrics.record_prediction(11, 0.9, 0.2)
    metrics.record_prediction(14, 0.9, 0.2)  # a label beyond the known classes still counts
    text = metrics.exposition().decode()
    assert metric_value(text, "inference_model_reloads_total", outcome="success") == 1
    assert metric_value(text, "inference_model_reloads_total", outcome="failure") == 1
    assert (
        metric_value(
            text, "inference_model_info", model_name="m", model_version="2", git_commit="def"
        )
        == 1
    )
    assert 'model_version="1"' not in text
    assert metric_value(text, "inference_predictions_total", predicted_class="11") == 1
    assert metric_value(text, "inference_predictions_total", predicted_class="14") == 1
    metrics.record_batch(np.array([15, 0]), np.array([0.5, 0.6]), np.array([0.1, 0.2]))
    text = metrics.exposition().decode()
    assert metric_value(text, "inference_predictions_total", predicted_class="15") == 1
    assert "process_" not in text


def test_in_flight_gauge_returns_to_zero(model: LoadedModel) -> None:
    client = AsgiClient(make_app(model))
    client.post("/predict", {"instances": digits_rows(2).tolist()})
    client.post("/predict", b"nope")
    assert metric_value(scrape(client), "inference_requests_in_flight") == 0
