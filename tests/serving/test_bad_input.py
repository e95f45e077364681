"""Client mistakes get a 4xx JSON reason, never a 5xx, and the service keeps serving.

A hand-written corpus pins the message for each mistake; hypothesis then throws arbitrary JSON
documents, mutated valid requests and raw bytes at both inference endpoints.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml.serving.model import LoadedModel

from .conftest import AsgiClient, Response, digits_rows, make_app

INFER = "/v2/models/digits-classifier/infer"
ROW = [1.0] * 64


def tensor(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": ROW}
    base.update(fields)
    return {"inputs": [base]}


PREDICT_CORPUS: list[tuple[Any, int, str]] = [
    (b"", 400, "body is empty"),
    (b"{not json", 400, "malformed JSON"),
    (b"\xff\xfe", 400, "malformed JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'{"instances": [[NaN]]}', 400, "malformed JSON"),
    (b'{"instances": [[1e400]]}', 400, "malformed JSON"),
    ({"rows": [ROW]}, 400, "missing 'instances'"),
    ({"instances": []}, 400, "non-empty array"),
    ({"instances": "abc"}, 400, "non-empty array"),
    ({"instances": [[]]}, 400, "has shape [1, 0]"),
    ({"instances": ROW}, 400, "has shape [64]"),
    ({"instances": [ROW[:63]]}, 400, "has shape [1, 63]"),
    ({"instances": [ROW + [1.0]]}, 400, "has shape [1, 65]"),
    ({"instances": [ROW, ROW[:10]]}, 400, "rectangular"),
    ({"instances": [["1"] * 64]}, 400, "found strings"),
    ({"instances": [[None] * 64]}, 400, "found nulls"),
    ({"instances": [[True] * 64]}, 400, "found a boolean"),
    ({"instances": [ROW[:63] + [False]]}, 400, "found a boolean"),
    ({"instances": [ROW[:63] + [{"a": 1}]]}, 400, "only numbers"),
    ({"instances": [ROW[:63] + [10**40]]}, 400, "too large for float32"),
    ({"instances": [[1] * 63 + [10**40]]}, 400, "float32"),
    ({"instances": [ROW[:63] + [1e39]]}, 400, "too large for float32"),
    ({"instances": [ROW[:63] + [-1e39]]}, 400, "too large for float32"),
    ({"instances": [ROW] * 257}, 413, "exceeds MAX_BATCH=256"),
    ({"instances": [[[ROW]]]}, 400, "has shape [1, 1, 1, 64]"),
]

INFER_CORPUS: list[tuple[Any, int, str]] = [
    ({}, 400, "'inputs' must be a list"),
    ({"inputs": []}, 400, "'inputs' must be a list"),
    ({"inputs": [1]}, 400, "'inputs' must be a list"),
    ({"inputs": [tensor()["inputs"][0]] * 2}, 400, "exactly one tensor"),
    (tensor(name="x"), 400, "unknown input 'x'"),
    (tensor(datatype="FP64"), 400, "datatype is 'FP64'"),
    (tensor(datatype="BYTES", data=["a"] * 64), 400, "datatype is 'BYTES'"),
    (tensor(shape="1,64"), 400, "'shape' must be a non-empty list"),
    (tensor(shape=[]), 400, "'shape' must be a non-empty list"),
    (tensor(shape=[1, -64]), 400, "'shape' must be a non-empty list"),
    (tensor(shape=[True, 64]), 400, "'shape' must be a non-empty list"),
    (tensor(shape=[1, 63]), 400, "holds 64 values but shape [1, 63] needs 63"),
    (tensor(shape=[2, 32]), 400, "has shape [2, 32]"),
    (tensor(shape=[1, 8, 8, 1]), 400, "has shape [1, 8, 8, 1]"),
    (tensor(shape=[0, 64], data=[]), 400, "'data' must be a non-empty array"),
    (tensor(data=None), 400, "'data' must be a non-empty array"),
    (tensor(data=[[1.0] * 10, [1.0] * 54]), 400, "flat or rectangular"),
    (tensor(data=["x"] * 64), 400, "found strings"),
    (tensor(data=ROW[:63] + [True]), 400, "found a boolean"),
    (tensor(data=ROW[:63] + [3e38 * 10]), 400, "too large for float32"),
    (tensor(shape=[300, 64], data=ROW * 300), 413, "exceeds MAX_BATCH=256"),
    # shapes are checked before anything is computed from them
    (tensor(shape=[1] * 9), 400, "has 9 dimensions; MAX_TENSOR_DIMS=8"),
    (tensor(shape=[2**62] * 30_000), 400, "MAX_TENSOR_DIMS=8"),
    (tensor(shape=[2**40, 64]), 413, "more than MAX_TENSOR_ELEMENTS=1048576"),
    (tensor(shape=[4096, 4096, 4096]), 413, "more than MAX_TENSOR_ELEMENTS"),
    ({**tensor(), "id": 5}, 400, "'id' must be a string"),
    ({**tensor(), "outputs": [{"name": "logits"}]}, 400, "unknown outputs ['logits']"),
    ({**tensor(), "outputs": "label"}, 400, "'outputs' must be a list"),
    ({**tensor(), "outputs": [{"nome": "label"}]}, 400, "'outputs' must be a list"),
]


def check_client_error(response: Response, status: int, fragment: str) -> None:
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    assert fragment in message, message


@pytest.mark.parametrize("body, status, fragment", PREDICT_CORPUS)
def test_predict_bad_input(client: AsgiClient, body: Any, status: int, fragment: str) -> None:
    check_client_error(client.post("/predict", body), status, fragment)
    assert client.post("/predict", {"instances": [ROW]}).status == 200  # still serving


@pytest.mark.parametrize("body, status, fragment", INFER_CORPUS)
def test_infer_bad_input(client: AsgiClient, body: Any, status: int, fragment: str) -> None:
    check_client_error(client.post(INFER, body), status, fragment)
    assert client.post(INFER, tensor()).status == 200


def test_oversized_body_is_413_by_header_and_by_stream(model: LoadedModel) -> None:
    client = AsgiClient(make_app(model, max_body_bytes=4096))
    big = json.dumps({"instances": [ROW] * 40})
    check_client_error(client.post("/predict", big), 413, "exceeds MAX_BODY_BYTES=4096")
    # no Content-Length (chunked transfer): the limit is enforced while the chunks arrive
    streamed = client.post("/predict", big, chunk=512, content_length=False)
    check_client_error(streamed, 413, "exceeds MAX_BODY_BYTES=4096")
    small = json.dumps({"instances": [ROW]})
    assert client.post("/predict", small, chunk=64, content_length=False).status == 200


def test_bad_content_length_binary_header_and_encoding(client: AsgiClient) -> None:
    body = json.dumps({"instances": [ROW]})
    bad_length = client.post("/predict", body, headers={"content-length": "12x"})
    check_client_error(bad_length, 400, "invalid Content-Length")
    binary = client.post("/predict", body, headers={"Inference-Header-Content-Length": "10"})
    check_client_error(binary, 400, "binary tensors are accepted by v2 infer only")
    v2 = json.dumps(tensor())
    for length in ("ten", "-1", "1" * 13):
        answer = client.post(INFER, v2, headers={"Inference-Header-Content-Length": length})
        check_client_error(answer, 400, "Inference-Header-Content-Length must be a byte count")
    gzipped = client.post(INFER, v2, headers={"Content-Encoding": "gzip"})
    check_client_error(gzipped, 415, "Content-Encoding 'gzip' is not supported")
    assert client.post(INFER, v2, headers={"Content-Encoding": "identity"}).status == 200


# -- property-based -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=40,
)
pixel = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
HYPOTHESIS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_handled(response: Response) -> None:
    assert response.status < 500, response.body
    body = response.json()
    if response.status >= 400:
        assert isinstance(body["error"], str) and body["error"]


@HYPOTHESIS
@given(document=json_values)
def test_any_json_document_is_handled(client: AsgiClient, document: Any) -> None:
    for path in ("/predict", INFER):
        assert_handled(client.post(path, json.dumps(document)))
        assert_handled(client.post(path, json.dumps({"instances": document})))
        assert_handled(client.post(path, json.dumps(tensor(data=document))))


@HYPOTHESIS
@given(raw=st.binary(max_size=300))
def test_any_bytes_are_handled(client: AsgiClient, raw: bytes) -> None:
    assert_handled(client.post("/predict", raw))
    assert_handled(client.post(INFER, raw))


@HYPOTHESIS
@given(
    rows=st.integers(1, 4),
    width=st.sampled_from([63, 64, 65]),
    values=st.lists(pixel, min_size=1, max_size=8),
    shape=st.lists(st.integers(-2, 70), min_size=1, max_size=4),
)
def test_mutated_tensors_are_handled(
    client: AsgiClient, rows: int, width: int, values: list[Any], shape: list[int]
) -> None:
    data = (values * (rows * width))[: rows * width]
    for fields in ({"shape": [rows, width]}, {"shape": shape}):
        response = client.post(INFER, tensor(data=data, **fields))
        assert_handled(response)
        if response.status == 200:  # accepted only when every value is a finite number
            assert width == 64 and all(type(v) in (int, float) for v in data)
    assert_handled(client.post("/predict", {"instances": [data[i::rows] for i in range(rows)]}))


@HYPOTHESIS
@given(
    rows=st.lists(
        st.lists(st.floats(0, 16, width=32), min_size=64, max_size=64), min_size=1, max_size=6
    )
)
def test_valid_rows_always_predict_the_argmax(
    client: AsgiClient, model: LoadedModel, rows: list[list[float]]
) -> None:
    response = client.post("/predict", {"instances": rows})
    assert response.status == 200
    body = response.json()
    probabilities = np.array(body["probabilities"], dtype=np.float32)
    assert body["predictions"] == probabilities.argmax(axis=1).tolist()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    _, labels = model.predict(np.array(rows, dtype=np.float32))
    assert body["predictions"] == labels.tolist()


def test_integer_pixels_equal_float_pixels(client: AsgiClient) -> None:
    rows = digits_rows(3)
    as_int = client.post("/predict", {"instances": rows.astype(int).tolist()}).json()
    as_float = client.post("/predict", {"instances": rows.tolist()}).json()
    assert as_int == as_float


def test_fast_and_checked_decoding_agree(client: AsgiClient) -> None:
    """Extra keys (more quotes) or a null elsewhere send a body down the checked path."""
    rows = digits_rows(5, seed=9).tolist()
    fast = client.post("/predict", {"instances": rows}).json()
    checked = client.post("/predict", {"instances": rows, "note": "x", "extra": None}).json()
    assert fast == checked


# Bodies of 4 KiB and more go to the native decoder first (codec._predict_rows_native, which
# declines what it does not take): the same mistakes must get the same answers there, and a trick
# that flattening would hide (a row of 63 numbers and an empty list next to a row of 63 numbers
# and two) must not slip through.
BIG = [ROW] * 40
LARGE_PREDICT_CORPUS: list[tuple[Any, int, str]] = [
    ({"instances": BIG + [ROW[:63]]}, 400, "rectangular"),
    ({"instances": BIG + [ROW[:63] + [[]], ROW[:63] + [[1.0, 2.0]]]}, 400, "rectangular"),
    ({"instances": BIG + [ROW[:63] + [True]]}, 400, "found a boolean"),
    ({"instances": BIG + [ROW[:63] + [None]]}, 400, "found nulls"),
    ({"instances": BIG + [ROW[:63] + ["1"]]}, 400, "found strings"),
    ({"instances": BIG + [ROW[:63] + ["[1"]]}, 400, "found strings"),
    ({"instances": BIG + [ROW[:63] + [1e39]]}, 400, "too large for float32"),
    ({"instances": BIG + [ROW[:63] + [10**40]]}, 400, "too large for float32"),
    ({"instances": [[ROW]] * 40}, 400, "has shape [40, 1, 64]"),
    ({"instances": BIG * 7}, 413, "exceeds MAX_BATCH=256"),
    (json.dumps({"instances": BIG})[:-3] + "1e400]]}", 400, "malformed JSON"),
    (json.dumps({"instances": BIG})[:-1], 400, "malformed JSON"),
]


@pytest.mark.parametrize("body, status, fragment", LARGE_PREDICT_CORPUS)
def test_large_predict_bad_input(client: AsgiClient, body: Any, status: int, fragment: str) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    assert len(raw) >= 4096
    check_client_error(client.post("/predict", raw), status, fragment)


def test_large_bodies_decode_as_small_ones_do(client: AsgiClient) -> None:
    rows = digits_rows(48, seed=4)
    expected = [client.post("/predict", {"instances": [row.tolist()]}).json() for row in rows]
    for form in (rows.tolist(), rows.reshape(48, 8, 8).tolist(), rows.astype(int).tolist()):
        for extra in ({}, {"note": "x"}):  # an extra key takes the checked path
            answer = client.post("/predict", {"instances": form, **extra}).json()
            assert answer["predictions"] == [e["predictions"][0] for e in expected]
            assert answer["probabilities"] == [e["probabilities"][0] for e in expected]


@pytest.mark.parametrize("endpoint", ["/predict", INFER])
@HYPOTHESIS
@given(
    rows=st.lists(
        st.lists(st.floats(-1e6, 1e6, width=32), min_size=64, max_size=64),
        min_size=1,
        max_size=3,
    )
)
def test_large_valid_bodies_predict_as_the_model_does(
    client: AsgiClient, model: LoadedModel, endpoint: str, rows: list[list[float]]
) -> None:
    rows = rows * 16  # 16 rows of 64 numbers are over 4 KiB even as "0.0, 0.0, ...": native
    if endpoint == INFER:
        flat = [value for row in rows for value in row]
        response = client.post(INFER, tensor(shape=[len(rows), 64], data=flat))
        predicted = response.json()["outputs"][1]["data"] if response.status == 200 else None
    else:
        response = client.post("/predict", {"instances": rows})
        predicted = response.json()["predictions"] if response.status == 200 else None
    _, labels = model.predict(np.array(rows, dtype=np.float32))
    assert response.status == 200 and predicted == labels.tolist()


FLAT = ROW * 40  # 40 rows of 64 values, flat: over 4 KiB, so the native decoder reads it first
LARGE_INFER_CORPUS: list[tuple[Any, int, str]] = [
    (tensor(shape=[40, 64], data=FLAT[:-1] + [True]), 400, "found a boolean"),
    (tensor(shape=[40, 64], data=FLAT[:-1] + [None]), 400, "found nulls"),
    (tensor(shape=[40, 64], data=FLAT[:-1] + ["1"]), 400, "found strings"),
    (tensor(shape=[40, 64], data=FLAT[:-2] + [[], [1.0, 2.0]]), 400, "flat or rectangular"),
    (tensor(shape=[40, 64], data=FLAT[:-1] + [1e39]), 400, "too large for float32"),
    (tensor(shape=[40, 64], data=FLAT[:-1]), 400, "holds 2559 values but shape [40, 64]"),
    (tensor(shape=[40, "64"], data=FLAT), 400, "non-negative integers"),
    (tensor(shape=[40, 64], data=FLAT, datatype="FP64"), 400, "expected 'FP32'"),
    (tensor(shape=[40, 64], data=FLAT, name="pixels"), 400, "unknown input 'pixels'"),
    ({**tensor(shape=[40, 64], data=FLAT), "id": 7}, 400, "'id' must be a string"),
    ({**tensor(shape=[40, 64], data=FLAT), "outputs": [{"name": "x"}]}, 400, "unknown outputs"),
    (tensor(shape=[400, 64], data=FLAT * 10), 413, "exceeds MAX_BATCH=256"),
]


@pytest.mark.parametrize("body, status, fragment", LARGE_INFER_CORPUS)
def test_large_infer_bad_input(client: AsgiClient, body: Any, status: int, fragment: str) -> None:
    assert len(json.dumps(body)) >= 4096
    check_client_error(client.post(INFER, body), status, fragment)


def test_large_infer_bodies_decode_as_small_ones_do(client: AsgiClient) -> None:
    rows = digits_rows(48, seed=8)
    small = [client.post(INFER, tensor(data=row.tolist())).json() for row in rows]
    labels = [answer["outputs"][1]["data"][0] for answer in small]
    for shape, data in (
        ([48, 64], rows.reshape(-1).tolist()),
        ([48, 1, 8, 8], rows.reshape(-1).tolist()),
        ([48, 64], rows.tolist()),  # nested data: the checked path
    ):
        body = {**tensor(shape=shape, data=data), "id": "r1", "outputs": [{"name": "label"}]}
        answer = client.post(INFER, body).json()
        assert answer["id"] == "r1" and [o["name"] for o in answer["outputs"]] == ["label"]
        assert answer["outputs"][0]["data"] == labels
