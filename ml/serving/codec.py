"""Request decoding and response encoding for ``/predict`` and the Open Inference Protocol.

Everything a client can get wrong becomes a ``ClientError`` (a 4xx with a message naming the
field), decided with a few numpy calls rather than a Python loop per value: numpy infers one
dtype for the whole nested list, so strings, nulls, booleans and ragged rows each show up as a
dtype or shape the checks below reject.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import tensor_json

from ml.serving.model import INPUT_NAME, OUTPUT_NAMES, Floats, Labels, LoadedModel

_NUMERIC_KINDS = frozenset("fiu")
# below this size orjson + numpy is as fast as the native decoder and its buffer
_NATIVE_MIN_BYTES = 4096
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True)
class TensorLimits:
    """What one request may ask of the decoder (``MAX_BATCH``, ``MAX_TENSOR_*``)."""

    max_batch: int = 256
    max_elements: int = 1 << 20
    max_dims: int = 8


class ClientError(Exception):
    """A request the client must fix: HTTP status and a message for the JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(message: str) -> bytes:
    """The KServe v2 error shape, used by every endpoint."""
    return orjson.dumps({"error": message})


def load_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise ClientError(400, "request body is empty; expected a JSON object")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ClientError(400, f"malformed JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ClientError(400, "request body must be a JSON object")
    return document


def to_rows(values: object, field: str, model: LoadedModel, max_batch: int, strict: bool) -> Floats:
    """Nested numbers -> float32 [N, F]; accepts [N, F], [N, S, S] and [N, 1, S, S] (S*S = F).

    ``strict`` (set when the body contains a JSON boolean anywhere) walks the values, because
    numpy would silently turn ``true`` inside a list of numbers into 1.
    """
    if not isinstance(values, list) or not values:
        raise ClientError(400, f"'{field}' must be a non-empty array of rows")
    if strict:
        _reject_booleans(values, field)
    try:
        array = np.array(values)
    except (ValueError, TypeError):
        raise ClientError(400, f"'{field}' must be a rectangular array of numbers") from None
    return _as_rows(array, field, model, max_batch)


def _as_rows(array: npt.NDArray[Any], field: str, model: LoadedModel, max_batch: int) -> Floats:
    if array.dtype.kind not in _NUMERIC_KINDS:
        found = {"b": "booleans", "U": "strings", "O": "nulls or out-of-range numbers"}
        raise ClientError(
            400,
            f"'{field}' must hold only numbers "
            f"(found {found.get(array.dtype.kind, array.dtype.name)})",
        )
    features = model.features
    shape = array.shape
    side = math.isqrt(features)
    square = side * side == features
    if not (
        (len(shape) == 2 and shape[1] == features)
        or (square and len(shape) == 3 and shape[1:] == (side, side))
        or (square and len(shape) == 4 and shape[1:] == (1, side, side))
    ):
        forms = f"[N, {features}]" + (f", [N, {side}, {side}] or [N, 1, {side}, {side}]" * square)
        raise ClientError(
            400, f"'{field}' has shape {list(shape)}; expected {forms} (N rows of pixels)"
        )
    if shape[0] > max_batch:
        raise ClientError(413, f"batch of {shape[0]} rows exceeds MAX_BATCH={max_batch}")
    rows = array.reshape(shape[0], features)
    if rows.dtype != np.float32:
        with np.errstate(over="ignore", invalid="ignore"):
            rows = rows.astype(np.float32)
    if not np.isfinite(rows).all():
        raise ClientError(400, f"'{field}' holds NaN, infinity or a value too large for float32")
    return rows


def _reject_booleans(values: list[Any], field: str) -> None:
    stack: list[Any] = [values]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool):
            raise ClientError(400, f"'{field}' must hold only numbers (found a boolean)")


def decode_predict(body: bytes, model: LoadedModel, max_batch: int) -> Floats:
    """``{"instances": [[F numbers], ...]}`` -> rows.

    Fast path: when the body's only string is the key and it holds no ``true``, ``false`` or
    ``null`` (no ``u``/``f`` byte anywhere), the values can only be numbers and lists, so numpy
    converts them to float32 in one call; any surprise (ragged, wrong width, too large) falls
    through to the checked path, which produces the error message.
    """
    if len(body) >= _NATIVE_MIN_BYTES:
        rows = _predict_rows_native(body, model.features, max_batch)
        if rows is not None:
            return rows
    document = load_json(body)
    if "instances" not in document:
        raise ClientError(400, "missing 'instances': expected {\"instances\": [[numbers], ...]}")
    values = document["instances"]
    if body.count(b'"') == 2 and b"u" not in body and b"f" not in body and type(values) is list:
        try:
            # orjson refuses NaN and infinities, so a value float32 cannot hold is the only way
            # to a non-finite row: the cast says so itself, no second pass over the rows
            with np.errstate(over="raise"):
                rows = np.array(values, dtype=np.float32)
        except (ValueError, TypeError, FloatingPointError):
            pass
        else:
            shape = rows.shape
            if len(shape) == 2 and shape[1] == model.features and 0 < shape[0] <= max_batch:
                return rows
    strict = b"true" in body or b"false" in body
    return to_rows(values, "instances", model, max_batch, strict)


def _predict_rows_native(body: bytes, features: int, max_batch: int) -> Floats | None:
    """Large bodies: the native decoder writes the numbers straight into one float32 buffer,
    with the GIL released, no Python floats (``tensor_json``, native/tensor_json).

    It takes exactly ``{"instances": [[numbers], ...]}`` with rectangular rows of values float32
    can hold, and at most ``max_batch`` rows of ``features`` (the buffer has no room for more).
    Anything else, including every malformed body, returns None and the checked path decides and
    words the error.
    """
    out = np.empty(min(len(body) // 2 + 1, max_batch * features), dtype=np.float32)
    shape = tensor_json.instances(body, out)
    if shape is None or shape[1] != features:
        return None
    count, width = shape
    return out[: count * width].reshape(count, width)


def encode_predict(model: LoadedModel, probabilities: Floats, labels: Labels) -> bytes:
    return orjson.dumps(
        {
            "model_name": model.name,
            "model_version": model.version,
            "predictions": labels,
            "probabilities": probabilities,
        },
        option=_DUMPS_OPTIONS,
    )


class InferRequest:
    """A decoded v2 inference request; ``binary``: outputs to send as raw tensors."""

    __slots__ = ("rows", "request_id", "outputs", "binary")

    def __init__(
        self,
        rows: Floats,
        request_id: str | None,
        outputs: tuple[str, ...],
        binary: frozenset[str] = frozenset(),
    ) -> None:
        self.rows = rows
        self.request_id = request_id
        self.outputs = outputs
        self.binary = binary


def decode_infer(
    body: bytes, model: LoadedModel, limits: TensorLimits, header_length: int | None = None
) -> InferRequest:
    """An Open Inference Protocol request with one FP32 tensor named ``input``.

    ``header_length`` (the ``Inference-Header-Content-Length`` header) turns on Triton's binary
    tensor extension: the body is that many bytes of JSON, then the raw little-endian tensors of
    the inputs that declare a ``binary_data_size`` parameter, in their order.
    """
    binary = b""
    if header_length is not None:
        if header_length > len(body):
            raise ClientError(
                400,
                f"Inference-Header-Content-Length={header_length} exceeds the body's "
                f"{len(body)} bytes",
            )
        body, binary = body[:header_length], body[header_length:]
    document = None
    if len(body) >= _NATIVE_MIN_BYTES:
        document = _infer_document_native(body, limits.max_elements)
    if document is None:
        document = load_json(body)
        if header_length is None:
            fast = _infer_request_fast(document, body, model, limits)
            if fast is not None:
                return fast
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ClientError(
            400, f"'inputs' must be a list holding exactly one tensor object named {INPUT_NAME!r}"
        )
    tensor: dict[str, Any] = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise ClientError(
            400, f"unknown input {tensor.get('name')!r}; the model takes one named {INPUT_NAME!r}"
        )
    if tensor.get("datatype") != "FP32":
        raise ClientError(400, f"input datatype is {tensor.get('datatype')!r}; expected 'FP32'")
    shape = tensor.get("shape")
    if isinstance(shape, list) and len(shape) > limits.max_dims:  # before touching each one
        raise ClientError(
            400, f"input 'shape' has {len(shape)} dimensions; MAX_TENSOR_DIMS={limits.max_dims}"
        )
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(d) is int and d >= 0 for d in shape)  # noqa: E721 - bool is not a dim
    ):
        raise ClientError(400, "input 'shape' must be a non-empty list of non-negative integers")
    expected = _elements(shape, limits.max_elements)
    parameters = tensor.get("parameters")
    binary_size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    data = tensor.get("data")
    if binary_size is not None or binary:
        array = _binary_tensor(tensor, binary_size, binary, header_length, expected)
    elif isinstance(data, np.ndarray):  # already numbers, flat (_infer_document_native)
        array = data
    else:
        if not isinstance(data, list) or not data:
            raise ClientError(400, "input 'data' must be a non-empty array of numbers")
        if b"true" in body or b"false" in body:
            _reject_booleans(data, "data")
        try:
            array = np.array(data)
        except (ValueError, TypeError):
            raise ClientError(
                400, "input 'data' must be a flat or rectangular array of numbers"
            ) from None
    if array.size != expected:
        raise ClientError(
            400, f"input 'data' holds {array.size} values but shape {shape} needs {expected}"
        )
    if array.dtype.kind in _NUMERIC_KINDS:
        array = array.reshape(shape)
    rows = _as_rows(array, "data", model, limits.max_batch)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ClientError(400, "'id' must be a string")
    outputs, binary_outputs = _requested_outputs(
        document.get("outputs"), document.get("parameters")
    )
    return InferRequest(rows, request_id, outputs, binary_outputs)


def _infer_request_fast(
    document: dict[str, Any], body: bytes, model: LoadedModel, limits: TensorLimits
) -> InferRequest | None:
    """The common small request in two numpy calls: one ``input`` FP32 tensor of shape [N, F]
    with flat numeric ``data`` and no JSON literal numpy would turn into a number. Anything else
    (and every mistake) returns None and takes the checked path, which words the error."""
    inputs = document.get("inputs")
    if type(inputs) is not list or len(inputs) != 1:
        return None
    tensor = inputs[0]
    if type(tensor) is not dict or "parameters" in tensor:
        return None
    shape, data = tensor.get("shape"), tensor.get("data")
    if (
        tensor.get("name") != INPUT_NAME
        or tensor.get("datatype") != "FP32"
        or type(shape) is not list
        or len(shape) != 2
        or type(data) is not list
    ):
        return None
    count, width = shape
    if (
        type(count) is not int
        or width != model.features
        or type(width) is not int
        or not 0 < count <= limits.max_batch
        or len(data) != count * width
        or b"true" in body
        or b"false" in body
        or b"null" in body
    ):
        return None
    try:
        values = np.array(data)  # its own dtype: a float32 request would turn "1" into 1.0
    except (ValueError, TypeError):
        return None
    if values.dtype.kind not in _NUMERIC_KINDS or values.ndim != 1:
        return None
    try:
        with np.errstate(over="raise"):  # orjson refuses NaN and infinities: only a cast overflows
            flat = values.astype(np.float32)
    except FloatingPointError:
        return None
    request_id = document.get("id")
    if request_id is not None and type(request_id) is not str:
        return None
    outputs, binary = _requested_outputs(document.get("outputs"), document.get("parameters"))
    return InferRequest(flat.reshape(count, width), request_id, outputs, binary)


def _elements(shape: list[int], limit: int) -> int:
    """The product of the dimensions, refused as soon as it passes ``limit``."""
    product = 1
    for dimension in shape:
        product *= dimension
        if product > limit:
            raise ClientError(
                413, f"input 'shape' {shape[:8]} declares more than MAX_TENSOR_ELEMENTS={limit}"
            )
    return product


def _binary_tensor(
    tensor: dict[str, Any],
    size: object,
    binary: bytes,
    header_length: int | None,
    elements: int,
) -> npt.NDArray[Any]:
    """The input's raw FP32 data from the binary part of the body (Triton's extension)."""
    if header_length is None:
        raise ClientError(
            400, "'binary_data_size' needs the Inference-Header-Content-Length header"
        )
    if size is None:
        raise ClientError(
            400, f"the body carries {len(binary)} bytes after its JSON that no input declares"
        )
    if "data" in tensor:
        raise ClientError(400, "input has both 'data' and 'binary_data_size'; send one")
    if type(size) is not int or size != elements * 4:  # noqa: E721 - bool is not a size
        raise ClientError(
            400, f"'binary_data_size' is {size!r}; {elements} FP32 values take {elements * 4} bytes"
        )
    if len(binary) != size:
        raise ClientError(
            400, f"the binary part holds {len(binary)} bytes; the input declares {size}"
        )
    return np.frombuffer(binary, dtype="<f4")


def _infer_document_native(body: bytes, max_elements: int) -> dict[str, Any] | None:
    """Large v2 bodies: the document with the tensor's ``data`` already a flat float32 array.

    Taken only when ``inputs`` is one tensor whose ``data`` is a non-empty flat array of numbers
    float32 can hold, at most ``max_elements`` of them: the native decoder writes them into one
    buffer with the GIL released and hands back the rest of the document as JSON, which
    ``decode_infer`` checks exactly as on the orjson path. Anything else returns None and takes
    that path.
    """
    out = np.empty(min(len(body) // 2 + 1, max_elements), dtype=np.float32)
    decoded = tensor_json.infer(body, out)
    if decoded is None:
        return None
    light, count = decoded
    try:
        document: dict[str, Any] = orjson.loads(light)
    except orjson.JSONDecodeError:  # text serde_json keeps raw but orjson refuses: its words
        return None
    document["inputs"][0]["data"] = out[:count]
    return document


def _requested_outputs(
    requested: object, parameters: object
) -> tuple[tuple[str, ...], frozenset[str]]:
    """-> (output names, the ones to send binary). ``binary_data_output`` in the request's
    parameters makes binary the default; an output's own ``binary_data`` overrides it."""
    binary_default = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    if requested is None:
        return OUTPUT_NAMES, frozenset(OUTPUT_NAMES if binary_default else ())
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise ClientError(400, "'outputs' must be a list of objects with a 'name'")
    names = tuple(o["name"] for o in requested)
    unknown = sorted(set(names) - set(OUTPUT_NAMES))
    if unknown:
        raise ClientError(400, f"unknown outputs {unknown}; the model has {list(OUTPUT_NAMES)}")
    binary = set()
    for output in requested:
        options = output.get("parameters") or {}
        if not isinstance(options, dict):
            raise ClientError(400, "an output's 'parameters' must be an object")
        if options.get("classification"):
            raise ClientError(400, "the classification extension is not supported")
        wanted = options.get("binary_data", binary_default)
        if not isinstance(wanted, bool):
            raise ClientError(400, "an output's 'binary_data' must be true or false")
        if wanted:
            binary.add(output["name"])
    if not names:
        return OUTPUT_NAMES, frozenset(OUTPUT_NAMES if binary_default else ())
    return names, frozenset(binary)


def encode_infer(
    model: LoadedModel, request: InferRequest, probabilities: Floats, labels: Labels
) -> tuple[bytes, int | None]:
    """-> (body, length of its JSON part when binary tensors follow it, else None)."""
    if request.outputs == OUTPUT_NAMES and not request.binary and request.request_id is None:
        return _encode_infer_default(model, probabilities, labels), None
    arrays: dict[str, npt.NDArray[Any]] = {"probabilities": probabilities, "label": labels}
    datatypes = {"probabilities": "FP32", "label": "INT64"}
    response: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request.request_id is not None:
        response["id"] = request.request_id
    outputs = []
    raw = []
    for name in request.outputs:
        array = arrays[name]
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatypes[name],
            "shape": list(array.shape),
        }
        if name in request.binary:
            data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        else:
            tensor["data"] = array.reshape(-1)
        outputs.append(tensor)
    response["outputs"] = outputs
    header = orjson.dumps(response, option=_DUMPS_OPTIONS)
    if not raw:
        return header, None
    return b"".join((header, *raw)), len(header)


def _encode_infer_default(model: LoadedModel, probabilities: Floats, labels: Labels) -> bytes:
    """The answer to a request with no id and the default outputs, written without building the
    nested dicts (the byte-for-byte same JSON as the general path; a test compares them)."""
    rows, classes = probabilities.shape
    return b"".join(
        (
            _infer_prefix(model.name, model.version),
            b"%d,%d" % (rows, classes),
            b'],"data":',
            orjson.dumps(probabilities.reshape(-1), option=_DUMPS_OPTIONS),
            b'},{"name":"label","datatype":"INT64","shape":[%d],"data":' % rows,
            orjson.dumps(labels, option=_DUMPS_OPTIONS),
            b"}]}",
        )
    )


@functools.lru_cache(maxsize=8)
def _infer_prefix(name: str, version: str) -> bytes:
    head = orjson.dumps({"model_name": name, "model_version": version})[:-1]
    return head + b',"outputs":[{"name":"probabilities","datatype":"FP32","shape":['
