"""The native JSON decoder (native/tensor_json): what it takes it reads exactly as the checked
path (orjson, then numpy's float32 cast) reads it, it declines everything else, it never writes
past the buffer it is given, and it releases the GIL while it parses, which is why it exists."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson
import pytest
import tensor_json
from hypothesis import given, settings
from hypothesis import strategies as st

from ml.serving import codec
from ml.serving.model import LoadedModel

from .conftest import AsgiClient

ROW = [1.0] * 64


def buffer(size: int) -> np.ndarray:
    return np.full(size, np.nan, dtype=np.float32)  # NaN: a slot the decoder did not write


def checked_rows(body: bytes) -> np.ndarray:
    """What the checked path reads: orjson's values through numpy's float32 cast."""
    return np.array(orjson.loads(body)["instances"], dtype=np.float32)


def same_values(got: np.ndarray, expected: np.ndarray) -> bool:
    """Bit for bit (no value one float32 step away), except the sign of zero: serde_json reads
    the integer literal "-0" as -0.0 where orjson reads the integer 0. Equal numbers, and no
    model can tell them apart; adding 0.0 turns -0.0 into 0.0 and changes nothing else."""
    return bool((got + np.float32(0)).tobytes() == (expected + np.float32(0)).tobytes())


# every way JSON can write a finite number, mixed in one body: integers (up to 20 digits, beyond
# 64 bits), float32 values, doubles beyond float32's precision, exponent forms, negative zero
number_text = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(repr),
    st.floats(-3e38, 3e38).map(repr),
    st.floats(-3e38, 3e38).map(lambda v: f"{v:.9e}"),
    st.floats(-1e6, 1e6).map(lambda v: f"{v:.17E}"),
    st.sampled_from(["-0", "-0.0", "0e0", "1E+2", "1e-45", "3.4028234e38", "123456789012345678"]),
)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(number_text, min_size=3, max_size=3), min_size=1, max_size=5))
def test_rows_read_exactly_as_the_checked_path_reads_them(rows: list[list[str]]) -> None:
    body = ('{"instances": [' + ",".join("[" + ", ".join(r) + "]" for r in rows) + "]}").encode()
    expected = checked_rows(body)
    out = buffer(64)
    shape = tensor_json.instances(body, out)
    if not np.isfinite(expected).all():  # beyond float32: the checked path's cast refuses it
        assert shape is None
        return
    assert shape == expected.shape
    got = out[: expected.size].reshape(expected.shape)
    assert same_values(got, expected)
    assert np.isnan(out[expected.size :]).all()


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(number_text, min_size=1, max_size=20),
    extra=st.dictionaries(
        st.text(max_size=5).filter(lambda k: k not in ("inputs", "data")),
        st.recursive(
            st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=3), inner, max_size=3),
            max_leaves=6,
        ),
        max_size=3,
    ),
)
def test_an_infer_request_keeps_every_other_field_as_written(
    data: list[str], extra: dict[str, Any]
) -> None:
    tensor = {**extra, "name": "input", "datatype": "FP32"}
    head = orjson.dumps({**extra, "inputs": [tensor]})
    # the tensor's data, written by hand so every number form appears, spliced in last
    body = head[: -len(b"}]}")] + b',"data":[' + ",".join(data).encode() + b"]}]}"
    expected_data = np.array(orjson.loads(body)["inputs"][0]["data"], dtype=np.float32)
    out = buffer(32)
    decoded = tensor_json.infer(body, out)
    if not np.isfinite(expected_data).all():
        assert decoded is None
        return
    assert decoded is not None
    light, count = decoded
    assert orjson.loads(light) == {**extra, "inputs": [tensor]}
    assert count == len(data)
    assert same_values(out[:count], expected_data)


DECLINED_INSTANCES = [
    b"",
    b"{not json",
    b"[1, 2]",
    b'{"instances": []}',
    b'{"instances": [[]]}',
    b'{"rows": [[1, 2]]}',
    b'{"instances": [[1, 2]], "note": "x"}',  # a second key
    b'{"instances": [[1, 2]], "instances": [[3, 4]]}',  # a repeated key: orjson's to decide
    b'{"instances": [[1, 2], [3]]}',  # ragged
    b'{"instances": [[1, 2], [[3], [4]]]}',  # a nested row
    b'{"instances": [1, 2]}',  # flat
    b'{"instances": [[1, true]]}',
    b'{"instances": [[1, null]]}',
    b'{"instances": [[1, "2"]]}',
    b'{"instances": [[1, {"a": 1}]]}',
    b'{"instances": [[1, NaN]]}',
    b'{"instances": [[1, Infinity]]}',
    b'{"instances": [[1, 1e400]]}',  # beyond a double: orjson refuses it too
    b'{"instances": [[1, 1e39]]}',  # a double, beyond float32
    b'{"instances": [[1, 2,]]}',  # trailing comma
    b'{"instances": [[1, 2]]} x',  # trailing bytes
    b'{"instances": [[01, 2]]}',  # a leading zero
    b'{"instances": [[1, 2]]',  # cut short
    b'\xef\xbb\xbf{"instances": [[1, 2]]}',  # a byte-order mark
]


@pytest.mark.parametrize("body", DECLINED_INSTANCES)
def test_anything_but_rows_of_numbers_is_declined(body: bytes) -> None:
    out = buffer(64)
    assert tensor_json.instances(body, out) is None


DECLINED_INFER = [
    b"{}",
    b'{"inputs": []}',
    b'{"inputs": [{"name": "input", "data": [1]}, {"name": "b", "data": [2]}]}',
    b'{"inputs": [{"name": "input"}]}',
    b'{"inputs": [{"name": "input", "data": []}]}',
    b'{"inputs": [{"name": "input", "data": [[1, 2], [3, 4]]}]}',  # nested: numpy's to read
    b'{"inputs": [{"name": "input", "data": [1, true]}]}',
    b'{"inputs": [{"name": "input", "data": [1, "2"]}]}',
    b'{"inputs": [{"name": "input", "data": [1e39]}]}',
    b'{"inputs": [{"name": "input", "data": [1], "data": [2]}]}',
    b'{"inputs": [{"name": "input", "name": "x", "data": [1]}]}',
    b'{"id": "a", "id": "b", "inputs": [{"name": "input", "data": [1]}]}',
    b'{"inputs": [{"name": "input", "data": [1]}], "inputs": []}',
    b'{"inputs": {"name": "input", "data": [1]}}',
    b'{"inputs": [{"name": "input", "data": [1]}]}]',
]


@pytest.mark.parametrize("body", DECLINED_INFER)
def test_anything_but_one_flat_tensor_is_declined(body: bytes) -> None:
    out = buffer(64)
    assert tensor_json.infer(body, out) is None


def test_the_buffer_bounds_what_is_read() -> None:
    out = buffer(8)
    assert tensor_json.instances(b'{"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}', out) == (2, 4)
    assert tensor_json.instances(b'{"instances": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}', out) is None
    assert tensor_json.infer(b'{"inputs": [{"data": [1, 2, 3, 4, 5, 6, 7, 8, 9]}]}', out) is None
    guarded = buffer(12)
    assert (
        tensor_json.instances(b'{"instances": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}', guarded[:8])
        is None
    )
    assert np.isnan(guarded[8:]).all()  # nothing written past the view it was given


@pytest.mark.parametrize(
    "out",
    [
        np.zeros(8, dtype=np.float64),
        np.zeros((4, 4), dtype=np.float32)[:, 0],  # not contiguous
        np.frombuffer(bytes(32), dtype=np.float32),  # read-only
    ],
    ids=["float64", "strided", "read-only"],
)
def test_an_unusable_buffer_is_refused(out: np.ndarray) -> None:
    with pytest.raises((ValueError, BufferError, TypeError)):
        tensor_json.instances(b'{"instances": [[1, 2]]}', out)


@pytest.fixture
def no_forced_switch() -> Iterator[None]:
    """A thread holding the GIL keeps it for a minute unless it lets go itself."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(60.0)
    yield
    sys.setswitchinterval(interval)


def runs_beside_python(call: Callable[[], object]) -> bool:
    """Whether this thread runs Python code while `call` runs on another one.

    With no forced switch, the worker keeps the GIL from `started.set()` on unless `call`
    releases it: only then does this thread wake from `started.wait()` before `done` is set."""
    started, done = threading.Event(), threading.Event()

    def worker() -> None:
        started.set()
        call()
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    started.wait()
    beside = not done.is_set()
    thread.join()
    return beside


@pytest.mark.usefixtures("no_forced_switch")
def test_the_parse_runs_without_the_gil() -> None:
    rows = np.random.default_rng(0).random((20_000, 64))
    predict = orjson.dumps({"instances": rows.tolist()})
    infer = orjson.dumps({"inputs": [{"name": "input", "data": rows.reshape(-1).tolist()}]})
    out = buffer(rows.size)
    assert runs_beside_python(lambda: tensor_json.instances(predict, out))
    assert runs_beside_python(lambda: tensor_json.infer(infer, out))
    # the control: a parse that holds the GIL throughout
    assert not runs_beside_python(lambda: orjson.loads(predict))


def test_the_codec_takes_the_native_path_for_large_bodies(
    model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[str] = []

    def spy(name: str) -> Callable[[bytes, np.ndarray], Any]:
        real = getattr(tensor_json, name)

        def call(body: bytes, out: np.ndarray) -> Any:
            result = real(body, out)
            taken.append(name if result is not None else "declined")
            return result

        return call

    for name in ("instances", "infer"):
        monkeypatch.setattr(codec.tensor_json, name, spy(name))
    rows = np.random.default_rng(1).integers(0, 17, size=(40, 64)).astype(np.float32)
    predict = orjson.dumps({"instances": rows.tolist()})
    assert len(predict) >= 4096
    decoded = codec.decode_predict(predict, model, 256)
    assert decoded.dtype == np.float32 and decoded.tobytes() == rows.tobytes()
    tensor = {"name": "input", "shape": [40, 64], "datatype": "FP32"}
    infer = orjson.dumps({"id": "r1", "inputs": [{**tensor, "data": rows.reshape(-1).tolist()}]})
    request = codec.decode_infer(infer, model, codec.TensorLimits())
    assert request.request_id == "r1" and request.rows.tobytes() == rows.tobytes()
    assert taken == ["instances", "infer"]


def test_large_bodies_answer_as_before_through_the_service(client: AsgiClient) -> None:
    rows = [[float(v) for v in range(64)]] * 40
    native = client.post("/predict", {"instances": rows}).json()
    checked = client.post("/predict", {"instances": rows, "note": "x"}).json()  # declined
    assert native == checked


def test_a_field_orjson_refuses_gets_the_checked_paths_answer(model: LoadedModel) -> None:
    """serde_json keeps a lone surrogate escape as raw text; orjson refuses it. The large body
    must get the same 400 as a small one, not be half read."""
    data = ",".join(["1.0"] * 64 * 40).encode()
    tensor = b'{"name": "input", "shape": [40, 64], "datatype": "FP32", "data": [' + data + b"]}"
    body = b'{"id": "\\ud800", "inputs": [' + tensor + b"]}"
    assert len(body) >= 4096 and tensor_json.infer(body, buffer(64 * 40)) is not None
    small = b'{"id": "\\ud800", "inputs": [{"name": "input", "data": [1.0]}]}'
    answers = []
    for each in (body, small):
        with pytest.raises(codec.ClientError) as refused:
            codec.decode_infer(each, model, codec.TensorLimits())
        answers.append((refused.value.status, refused.value.message))
    assert answers[0] == answers[1] and answers[0][0] == 400
