"""Triton's binary tensor extension: an unmodified tritonclient (its defaults send and ask for raw
tensors) against the real servers, plus the extension's error cases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton

from ml.serving.config import ServingConfig
from ml.serving.model import LoadedModel

from .conftest import AsgiClient, digits_rows, threaded_server

INFER = "/v2/models/digits-classifier/infer"


@pytest.fixture(params=["builtin", "uvicorn"])
def triton_client(
    request: pytest.FixtureRequest, model_dir: Path
) -> Iterator[triton.InferenceServerClient]:
    config = ServingConfig(model_uri=str(model_dir / "model.onnx"), http_server=request.param)
    with threaded_server(config) as (base, _server):
        client = triton.InferenceServerClient(url=base.removeprefix("http://"))
        try:
            yield client
        finally:
            client.close()


def test_an_unmodified_triton_client_works_with_its_defaults(
    triton_client: triton.InferenceServerClient, model: LoadedModel
) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("digits-classifier")
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]
    metadata = triton_client.get_model_metadata("digits-classifier")
    assert metadata["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 64]}
    rows = digits_rows(64, seed=4)
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)  # binary_data=True: the client's default
    result = triton_client.infer("digits-classifier", [tensor], request_id="r-1")
    probabilities, labels = model.predict(rows)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    response = result.get_response()
    assert response["id"] == "r-1" and response["model_version"] == "7"
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])


def test_binary_and_json_tensors_mix_per_input_and_output(
    triton_client: triton.InferenceServerClient, model: LoadedModel
) -> None:
    rows = digits_rows(3, seed=5)
    probabilities, labels = model.predict(rows)
    for binary_input in (True, False):
        tensor = triton.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary_input)
        outputs = [
            triton.InferRequestedOutput("label", binary_data=True),
            triton.InferRequestedOutput("probabilities", binary_data=False),
        ]
        result = triton_client.infer("digits-classifier", [tensor], outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("label"), labels)
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-6)
        kinds = {o["name"]: "data" in o for o in result.get_response()["outputs"]}
        assert kinds == {"label": False, "probabilities": True}


def binary_request(
    rows: np.ndarray, declared: int | None = None, extra: bytes = b"", **fields: object
) -> tuple[bytes, dict[str, str]]:
    raw = rows.astype("<f4").tobytes()
    tensor: dict[str, object] = {
        "name": "input",
        "datatype": "FP32",
        "shape": list(rows.shape),
        "parameters": {"binary_data_size": len(raw) if declared is None else declared},
        **fields,
    }
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    body = header.encode() + raw + extra
    return body, {"Inference-Header-Content-Length": str(len(header))}


def test_the_answer_carries_its_json_length_and_raw_tensors(client: AsgiClient) -> None:
    rows = digits_rows(2)
    body, headers = binary_request(rows)
    response = client.post(INFER, body, headers=headers)
    assert response.status == 200
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    document = json.loads(response.body[:length])
    sizes = {o["name"]: o["parameters"]["binary_data_size"] for o in document["outputs"]}
    assert sizes == {"probabilities": 2 * 10 * 4, "label": 2 * 8}
    assert len(response.body) == length + sum(sizes.values())
    labels = np.frombuffer(response.body[length + sizes["probabilities"] :], dtype="<i8")
    assert labels.shape == (2,)


@pytest.mark.parametrize(
    "build, status, fragment",
    [
        (lambda r: binary_request(r, declared=12), 400, "'binary_data_size' is 12"),
        (lambda r: binary_request(r, declared=True), 400, "'binary_data_size' is True"),
        (lambda r: binary_request(r, extra=b"\x00" * 4), 400, "the binary part holds"),
        (lambda r: binary_request(r, data=[1.0] * 64), 400, "both 'data' and 'binary_data_size'"),
        (
            lambda r: (binary_request(r)[0], {"Inference-Header-Content-Length": "999999"}),
            400,
            "exceeds the body's",
        ),
        (
            lambda r: (binary_request(r)[0], {}),
            400,
            "malformed JSON",  # without the header the whole body must be JSON
        ),
        (
            lambda r: binary_request(np.full((1, 64), np.nan, dtype=np.float32)),
            400,
            "NaN, infinity",
        ),
        (lambda r: binary_request(r, shape=[1, 64, 1, 1, 1, 1, 1, 1, 1]), 400, "MAX_TENSOR_DIMS"),
    ],
    ids=[
        "wrong-size",
        "boolean-size",
        "trailing-bytes",
        "data-and-binary",
        "header-too-long",
        "no-header",
        "nan",
        "too-many-dims",
    ],
)
def test_binary_mistakes_are_4xx_with_a_reason(
    client: AsgiClient, build: object, status: int, fragment: str
) -> None:
    body, headers = build(digits_rows(1))  # type: ignore[operator]
    response = client.post(INFER, body, headers=headers)
    assert response.status == status and fragment in response.json()["error"], response.body


def test_bytes_after_the_json_that_no_input_declares_are_refused(client: AsgiClient) -> None:
    header = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [1.0] * 64}]}
    )
    response = client.post(
        INFER,
        header.encode() + b"\x00" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status == 400 and "no input declares" in response.json()["error"]
    classification = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [1.0] * 64}],
        "outputs": [{"name": "label", "parameters": {"classification": 3}}],
    }
    refused = client.post(INFER, classification)
    assert refused.status == 400 and "classification" in refused.json()["error"]
