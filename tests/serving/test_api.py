"""Open Inference Protocol v2 conformance, /predict, /metadata and routing."""

from __future__ import annotations

import numpy as np
import pytest

from ml.serving.model import LoadedModel

from .conftest import AsgiClient, digits_rows

INFER = "/v2/models/digits-classifier/infer"


def v2_request(rows: np.ndarray, **extra: object) -> dict[str, object]:
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP32"}
    return {"inputs": [{**tensor, "data": rows.reshape(-1).tolist()}], **extra}


def test_health_and_server_metadata(client: AsgiClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "ml-serving" and server["extensions"] == ["binary_tensor_data"]
    assert isinstance(server["version"], str)


def test_model_metadata_and_readiness(client: AsgiClient) -> None:
    meta = client.get("/v2/models/digits-classifier").json()
    assert meta == {
        "name": "digits-classifier",
        "versions": ["7"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
    }
    assert client.get("/v2/models/digits-classifier/versions/7").json() == meta
    ready = client.get("/v2/models/digits-classifier/ready")
    assert ready.status == 200 and ready.json() == {"name": "digits-classifier", "ready": True}
    assert client.get("/v2/models/digits-classifier/versions/7/ready").status == 200


@pytest.mark.parametrize(
    "path, fragment",
    [
        ("/v2/models/other", "unknown model 'other'"),
        ("/v2/models/other/ready", "unknown model 'other'"),
        ("/v2/models/digits-classifier/versions/3", "unknown version '3'"),
        ("/v2/models/other/infer", "unknown model 'other'"),
        ("/v2/models/digits-classifier/versions/3/infer", "unknown version '3'"),
    ],
)
def test_unknown_model_or_version_is_404(client: AsgiClient, path: str, fragment: str) -> None:
    method = "POST" if path.endswith("/infer") else "GET"
    response = client.request(method, path, v2_request(digits_rows(1)))
    assert response.status == 404
    assert fragment in response.json()["error"]


def test_infer_matches_the_model_and_follows_the_protocol(
    client: AsgiClient, model: LoadedModel
) -> None:
    rows = digits_rows(5)
    response = client.post(INFER, v2_request(rows, id="req-1"))
    assert response.status == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["model_name"] == "digits-classifier" and body["model_version"] == "7"
    assert body["id"] == "req-1"
    probabilities, labels = model.predict(rows)
    by_name = {o["name"]: o for o in body["outputs"]}
    assert [o["name"] for o in body["outputs"]] == ["probabilities", "label"]
    assert by_name["probabilities"]["datatype"] == "FP32"
    assert by_name["probabilities"]["shape"] == [5, 10]
    sent = np.array(by_name["probabilities"]["data"], dtype=np.float32).reshape(5, 10)
    np.testing.assert_array_equal(sent, probabilities)  # float32 survives the JSON round trip
    assert by_name["label"] == {
        "name": "label",
        "datatype": "INT64",
        "shape": [5],
        "data": labels.tolist(),
    }


def test_infer_accepts_images_nested_data_and_versioned_paths(client: AsgiClient) -> None:
    rows = digits_rows(3)
    flat = client.post(INFER, v2_request(rows)).json()["outputs"]
    images = rows.reshape(3, 1, 8, 8)
    as_images = {"inputs": [{"name": "input", "shape": [3, 1, 8, 8], "datatype": "FP32"}]}
    as_images["inputs"][0]["data"] = images.tolist()  # nested data is accepted too
    assert client.post(INFER, as_images).json()["outputs"] == flat
    versioned = client.post("/v2/models/digits-classifier/versions/7/infer", v2_request(rows))
    assert versioned.json()["outputs"] == flat
    assert "id" not in versioned.json()


def test_infer_returns_only_the_requested_outputs(client: AsgiClient) -> None:
    body = client.post(INFER, v2_request(digits_rows(2), outputs=[{"name": "label"}])).json()
    assert [o["name"] for o in body["outputs"]] == ["label"]


def test_predict_returns_labels_and_probabilities(client: AsgiClient, model: LoadedModel) -> None:
    rows = digits_rows(4, seed=3)
    body = client.post("/predict", {"instances": rows.tolist()}).json()
    probabilities, labels = model.predict(rows)
    assert body["predictions"] == labels.tolist()
    np.testing.assert_array_equal(np.array(body["probabilities"], dtype=np.float32), probabilities)
    assert body["model_name"] == "digits-classifier" and body["model_version"] == "7"
    images = client.post("/predict", {"instances": rows.reshape(4, 8, 8).tolist()}).json()
    assert images["predictions"] == labels.tolist()


def test_predict_reads_a_body_sent_in_chunks(client: AsgiClient) -> None:
    rows = digits_rows(8)
    whole = client.post("/predict", {"instances": rows.tolist()}).json()
    chunked = client.post("/predict", {"instances": rows.tolist()}, chunk=100).json()
    assert chunked == whole


def test_metadata_is_the_registration_record_plus_what_is_served(client: AsgiClient) -> None:
    meta = client.get("/metadata").json()
    assert meta["model_name"] == "digits-classifier" and meta["version"] == "7"
    assert meta["git_commit"] == "commit-7" and meta["data_hash"] == "d" * 64
    assert meta["metrics"]["accuracy"] == 0.97
    assert meta["input"]["range"] == [0, 16] and meta["input"]["kind"] == "image"
    assert meta["served"]["features"] == 64 and meta["served"]["num_classes"] == 10
    assert meta["served"]["onnx_sha256"] == meta["onnx_sha256"]
    assert "loaded_at" in meta


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/nope", 404),
        ("GET", "/v3/models", 404),
        ("POST", "/v2/health/live", 405),
        ("GET", "/predict", 405),
        ("GET", INFER, 405),
        ("POST", "/v2/models/digits-classifier", 405),
        ("GET", "/admin/reload", 405),
    ],
)
def test_routing_errors_are_json(client: AsgiClient, method: str, path: str, status: int) -> None:
    response = client.request(method, path)
    assert response.status == status
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["error"], str)


def test_trailing_slash_and_head_on_health(client: AsgiClient) -> None:
    assert client.get("/v2/health/ready/").status == 200
    assert client.request("HEAD", "/v2/health/live").status == 200


def test_lifespan_completes_startup_and_shutdown(client: AsgiClient) -> None:
    import asyncio

    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return inbox.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(client.app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


@pytest.mark.parametrize("count", [1, 3, 64])
def test_the_fast_v2_paths_agree_with_the_general_ones(model: LoadedModel, count: int) -> None:
    """Small v2 requests skip the general decoder and encoder; both must give the same answer."""
    import orjson

    from ml.serving.codec import InferRequest, TensorLimits, decode_infer, encode_infer

    rows = digits_rows(count, seed=count)
    fast = decode_infer(orjson.dumps(v2_request(rows)), model, TensorLimits())
    # a null makes the fast decoder step aside (numpy would read it as NaN)
    general = decode_infer(orjson.dumps(v2_request(rows, id=None)), model, TensorLimits())
    np.testing.assert_array_equal(fast.rows, general.rows)
    assert (fast.outputs, fast.binary, fast.request_id) == (general.outputs, frozenset(), None)
    probabilities, labels = model.predict(fast.rows)
    body, json_length = encode_infer(model, fast, probabilities, labels)
    tensors = [
        {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": list(probabilities.shape),
            "data": probabilities.reshape(-1),
        },
        {"name": "label", "datatype": "INT64", "shape": [count], "data": labels},
    ]
    expected = {"model_name": model.name, "model_version": model.version, "outputs": tensors}
    assert json_length is None
    assert body == orjson.dumps(expected, option=orjson.OPT_SERIALIZE_NUMPY)
    reordered = InferRequest(fast.rows, None, ("label", "probabilities"))
    general_body, _ = encode_infer(model, reordered, probabilities, labels)
    assert [o["name"] for o in orjson.loads(general_body)["outputs"]] == ["label", "probabilities"]
