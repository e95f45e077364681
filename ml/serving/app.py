"""The service: one synchronous ``dispatch`` for every request, served over ASGI or raw HTTP.

A framework router, request object and middleware stack cost more per request than the model
does (~20 us), so routing is a dict lookup and a prefix split, and a request is answered by a
plain function call: ``dispatch(method, path, headers, body)`` returns the reply; for inference a
``Deferred`` reply, filled when this event-loop iteration's requests have been run through the
model together (``batching.py``: one onnxruntime call for all of them); and only when the answer
must wait longer (a hot reload, injected latency), a coroutine producing it. ``http.py`` calls
it straight from its protocol callbacks (no task, no ASGI messages); ``__call__`` wraps it as an
ASGI application for uvicorn, tests and any other ASGI server. Inference runs on the event loop:
it is shorter than a thread-pool hand-off and keeps every metric update on one thread. The
current model is one attribute; a reload builds a new ``LoadedModel`` off the loop and swaps the
reference, so a request in flight finishes on the model it started with.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any, NamedTuple, TypeVar

import numpy as np
import orjson

from ml.serving.batching import Deferred, MicroBatcher
from ml.serving.codec import (
    ClientError,
    InferRequest,
    TensorLimits,
    decode_infer,
    decode_predict,
    encode_infer,
    encode_predict,
    error_body,
    load_json,
)
from ml.serving.config import ServingConfig
from ml.serving.faults import FaultInjector
from ml.serving.metrics import ServiceMetrics
from ml.serving.model import INPUT_NAME, LoadedModel, ModelError, load_model
from ml.serving.sampling import InputSampler

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Loader = Callable[[str, str | None], LoadedModel]
Headers = Sequence[tuple[bytes, bytes]]

log = logging.getLogger("ml.serving")
T = TypeVar("T")

JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"
PROMETHEUS_TEXT = b"text/plain; version=0.0.4; charset=utf-8"
_SERVER_NAME = "ml-serving"
_EXTENSIONS = ["binary_tensor_data"]


class Reply(NamedTuple):
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: bytes = b""  # further header lines, each ending in CRLF (lower-case names)


Pending = Coroutine[Any, Any, Reply]
# a Reply now; a Deferred filled by this loop iteration's merged inference; or a coroutine
Answer = Reply | Deferred[Reply] | Pending


# A 401 carries its challenge (RFC 9110 11.6.1) in the reply itself, so every transport (our HTTP
# layer, uvicorn, granian) sends it by copying the reply's headers: one home for the rule.
_BEARER_CHALLENGE = b"www-authenticate: Bearer\r\n"


def error_reply(status: int, message: str) -> Reply:
    if status == 401:
        return Reply(status, error_body(message), JSON, _BEARER_CHALLENGE)
    return Reply(status, error_body(message))


class BodyLimit:
    """The one rule for a request body's size (MAX_BODY_BYTES), whichever server carries it.

    The app owns it; our HTTP layer (http.py) asks it before reading a byte of the body (the
    Content-Length header) and as chunks arrive, and so does the app's own ASGI entry under
    uvicorn or granian (``ModelService._read_body``). Both answers are ``None`` (go on) or the
    refusal; nothing is allocated unless a request is refused."""

    __slots__ = ("max_bytes", "message")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.message = f"body exceeds MAX_BODY_BYTES={max_bytes}"

    def check_declared(self, content_length: bytes) -> ClientError | None:
        """A Content-Length header's value: refused before a byte of the body is read."""
        if not content_length.isdigit():
            return ClientError(400, "invalid Content-Length header")
        if int(content_length) > self.max_bytes:
            return ClientError(413, self.message)
        return None

    def check_received(self, size: int) -> ClientError | None:
        """The bytes received so far (chunked bodies declare no length)."""
        return ClientError(413, self.message) if size > self.max_bytes else None


_INTERNAL_ERROR = error_reply(500, "internal error")
# a merged call's result: rows as received, probabilities, labels
_Computed = tuple[np.ndarray, np.ndarray, np.ndarray]


class _Job:
    """One inference request waiting for its loop iteration's merged onnxruntime call."""

    __slots__ = ("model", "rows", "served", "endpoint", "request", "started", "answer")

    def __init__(
        self,
        model: LoadedModel,
        rows: np.ndarray,
        served: np.ndarray,
        endpoint: str,
        request: InferRequest | None,
        started: float,
    ) -> None:
        self.model = model
        self.rows = rows  # as received
        self.served = served  # what the model sees (differs only under FAULT_DEGRADE)
        self.endpoint = endpoint
        self.request = request
        self.started = started
        self.answer: Deferred[Reply] = Deferred()


class ModelService:
    """``dispatch`` answers requests; the instance is also an ASGI application."""

    def __init__(
        self,
        model: LoadedModel,
        config: ServingConfig,
        metrics: ServiceMetrics | None = None,
        loader: Loader | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.metrics = metrics or ServiceMetrics()
        self.faults = FaultInjector(config.faults)
        self._loader = loader or self._load
        self._reload_lock = asyncio.Lock()
        self.body_limit = BodyLimit(config.max_body_bytes)
        self._max_batch = config.max_batch
        self._tensor_limits = TensorLimits(
            config.max_batch, config.max_tensor_elements, config.max_tensor_dims
        )
        self._batcher: MicroBatcher[_Job, _Computed] = MicroBatcher(
            self._compute, self._deliver, config.batch_merge_rows, workers=config.inference_threads
        )
        self.metrics.set_model(model.name, model.version, model.git_commit, model.num_classes)
        self.sampler = self._new_sampler(model)
        self._get_routes: dict[str, Callable[[], Reply]] = {
            "/v2/health/live": lambda: Reply(200, b'{"live":true}'),
            "/v2/health/ready": lambda: Reply(200, b'{"ready":true}'),
            "/v2": self._server_metadata,
            "/metadata": lambda: Reply(200, orjson.dumps(self.model.metadata(), default=str)),
            "/metrics": lambda: Reply(200, self.metrics.exposition(), PROMETHEUS_TEXT),
        }

    def _load(self, uri: str, registration: str | None) -> LoadedModel:
        """A reload's model: files only from under the model directory (``reload_dir``)."""
        directory = self.config.reload_dir
        if not uri.startswith("models:/"):
            uri = str(confined_path(directory, uri, "model_uri"))
        if registration is not None:
            registration = str(confined_path(directory, registration, "registration"))
        return load_model(
            uri,
            registration,
            name=self.config.model_name,
            intra_op_threads=self.config.intra_op_threads,
        )

    # -- routing -----------------------------------------------------------------------------

    def dispatch(
        self,
        method: str,
        path: str,
        headers: Headers,
        body: bytes,
        body_error: ClientError | None = None,
    ) -> Answer:
        """Answer one request. ``body_error``: the transport refused the body (e.g. too large)."""
        if path == "/predict":
            return self._inference(method, "predict", None, headers, body, body_error)
        if path.startswith("/v2/models/"):
            rest = path[11:]
            if rest.endswith("/infer"):
                return self._inference(method, "infer", rest[:-6], headers, body, body_error)
            return self._model_route(method, rest)
        if body_error is not None:
            return error_reply(body_error.status, body_error.message)
        if path == "/admin/reload":
            return self._reload(method, headers, body)
        if path == "/monitoring/sample":
            return self._sample(method, headers)
        handler = self._get_routes.get(path.rstrip("/") or path)
        if handler is None:
            return error_reply(404, f"no route for {path}")
        if method not in ("GET", "HEAD"):
            return error_reply(405, f"{path} accepts GET")
        return handler()

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                body, error = await self._read_body(scope, receive), None
            except ClientError as exc:
                body, error = b"", exc
            answer = self.dispatch(scope["method"], scope["path"], scope["headers"], body, error)
            reply = answer if isinstance(answer, Reply) else await answer
            headers = [
                (b"content-type", reply.content_type),
                (b"content-length", str(len(reply.body)).encode()),
            ]
            for line in reply.headers.split(b"\r\n"):
                if line:
                    name, _, value = line.partition(b": ")
                    headers.append((name, value))
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            await send({"type": "http.response.body", "body": reply.body})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.body_limit
        for key, value in scope["headers"]:
            if key == b"content-length":
                error = limit.check_declared(value)
                if error is not None:
                    raise error
        message = await receive()
        first: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            return first
        # chunks joined once at the end: `body += chunk` copies everything read so far for every
        # chunk, quadratic in a body a client trickles in many small pieces
        chunks, size = [first], len(first)
        while message.get("more_body", False):
            message = await receive()
            chunk: bytes = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            error = limit.check_received(size)
            if error is not None:
                raise error
        return b"".join(chunks)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.log_startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.log_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def log_startup(self) -> None:
        faults = self.config.faults.describe() if self.faults.active else None
        log.info("serving", extra={"model": _identity(self.model), "faults": faults})

    def log_shutdown(self) -> None:
        self._batcher.close()
        log.info("stopped: in-flight requests drained")

    # -- inference ---------------------------------------------------------------------------

    def _inference(
        self,
        method: str,
        endpoint: str,
        target: str | None,
        headers: Headers,
        body: bytes,
        body_error: ClientError | None,
    ) -> Answer:
        started = perf_counter()
        model = self.model
        try:
            if method != "POST":
                raise ClientError(405, f"{'/predict' if target is None else 'infer'} accepts POST")
            if target is not None:
                self._check_target(model, target)
            if body_error is not None:
                raise body_error
            header_length = _body_headers(headers, binary_allowed=target is not None)
            request: InferRequest | None = None
            if endpoint == "predict":
                rows = decode_predict(body, model, self._max_batch)
            else:
                request = decode_infer(body, model, self._tensor_limits, header_length)
                rows = request.rows
            served = rows
            if self.faults.active:
                if self.faults.should_fail():
                    raise _InjectedFault()
                served = self.faults.degrade(rows)
                if self.faults.latency_s > 0.0:
                    job = _Job(model, rows, served, endpoint, request, started)
                    return self._after_latency(job)
        except ClientError as exc:  # includes the injected 503s
            return self._finish(endpoint, started, error_reply(exc.status, exc.message))
        except Exception:  # a server fault: say so, keep serving, log the traceback
            log.exception("inference failed", extra={"endpoint": endpoint})
            return self._finish(endpoint, started, _INTERNAL_ERROR)
        return self._submit(_Job(model, rows, served, endpoint, request, started))

    def _submit(self, job: _Job) -> Reply | Deferred[Reply]:
        """Queue the rows for this loop iteration's merged onnxruntime call (batching.py)."""
        self._batcher.submit(job)
        answer = job.answer
        return answer.result() if answer.done else answer

    @staticmethod
    def _compute(jobs: list[_Job]) -> _Computed:
        """One onnxruntime call for requests sharing a model; may run on the inference thread."""
        first = jobs[0]
        if len(jobs) == 1:
            rows, served = first.rows, first.served
        else:
            served = np.concatenate([job.served for job in jobs])
            # the inputs as received (metrics, drift sample), not the fault-degraded ones served
            same = all(job.served is job.rows for job in jobs)
            rows = served if same else np.concatenate([job.rows for job in jobs])
        probabilities, labels = first.model.predict(served)
        return rows, probabilities, labels

    def _deliver(self, jobs: list[_Job], outcome: _Computed | Exception) -> None:
        """On the event loop: record the metrics, then answer each request with its own rows."""
        first = jobs[0]
        if isinstance(outcome, Exception):
            if len(jobs) > 1:  # answer each on its own, so only a culprit request fails
                for job in jobs:
                    self._deliver([job], self._compute_or_error([job]))
                return
            log.error("inference failed", extra={"endpoint": first.endpoint}, exc_info=outcome)
            first.answer.resolve(self._finish(first.endpoint, first.started, _INTERNAL_ERROR))
            return
        rows, probabilities, labels = outcome
        model = first.model
        self._record_predictions(model, rows, probabilities, labels, first.started)
        offset = 0
        for job in jobs:
            end = offset + job.rows.shape[0]
            try:
                if job.request is None:
                    payload = encode_predict(model, probabilities[offset:end], labels[offset:end])
                    reply = Reply(200, payload)
                else:
                    payload, json_length = encode_infer(
                        model, job.request, probabilities[offset:end], labels[offset:end]
                    )
                    if json_length is None:
                        reply = Reply(200, payload)
                    else:  # Triton's binary tensor extension: JSON, then the raw tensors
                        reply = Reply(
                            200,
                            payload,
                            OCTET_STREAM,
                            b"inference-header-content-length: %d\r\n" % json_length,
                        )
            except Exception:
                log.exception("encoding the answer failed", extra={"endpoint": job.endpoint})
                reply = _INTERNAL_ERROR
            job.answer.resolve(self._finish(job.endpoint, job.started, reply))
            offset = end

    def _compute_or_error(self, jobs: list[_Job]) -> _Computed | Exception:
        try:
            return self._compute(jobs)
        except Exception as exc:
            return exc

    async def _after_latency(self, job: _Job) -> Reply:
        self.metrics.in_flight += 1
        try:
            await asyncio.sleep(self.faults.latency_s)
        finally:
            self.metrics.in_flight -= 1
        answer = self._submit(job)
        return answer if isinstance(answer, Reply) else await answer

    def _finish(self, endpoint: str, started: float, reply: Reply) -> Reply:
        self.metrics.record_request(endpoint, reply.status, perf_counter() - started)
        return reply

    def _record_predictions(
        self,
        model: LoadedModel,
        rows: np.ndarray,
        probabilities: np.ndarray,
        labels: np.ndarray,
        started: float,
    ) -> None:
        if self.sampler is not None:  # the inputs as received, before any injected degradation
            self.sampler.offer(rows, labels, started)
        if labels.shape[0] == 1:  # scalar path: numpy reductions cost microseconds each
            label = int(labels[0])
            self.metrics.record_prediction(
                label, probabilities.item(0, label), model.input_summary_of_one(rows)
            )
        else:
            # confidence = the probability of the predicted label; indexing is ~5x cheaper than
            # probabilities.max(axis=1), numpy's reduction along a short axis
            confidence = probabilities[np.arange(labels.shape[0]), labels]
            self.metrics.record_batch(labels, confidence, model.input_summary(rows))

    def _check_target(self, model: LoadedModel, target: str) -> None:
        name, _, version = target.partition("/versions/")
        if name != model.name:
            raise ClientError(404, f"unknown model {name!r}; this server serves {model.name!r}")
        if version and version != model.version:
            raise ClientError(
                404, f"unknown version {version!r} of {name!r}; serving version {model.version!r}"
            )

    # -- v2 model routes ---------------------------------------------------------------------

    def _model_route(self, method: str, rest: str) -> Reply:
        if method not in ("GET", "HEAD"):
            return error_reply(405, f"/v2/models/{rest} accepts GET")
        model = self.model
        ready = rest.endswith("/ready")
        try:
            self._check_target(model, rest[:-6] if ready else rest.rstrip("/"))
        except ClientError as exc:
            return error_reply(exc.status, exc.message)
        if ready:
            return Reply(200, orjson.dumps({"name": model.name, "ready": True}))
        return Reply(200, orjson.dumps(model_metadata(model)))

    def _server_metadata(self) -> Reply:
        document = {"name": _SERVER_NAME, "version": _version(), "extensions": _EXTENSIONS}
        return Reply(200, orjson.dumps(document))

    # -- hot reload --------------------------------------------------------------------------

    def _reload(self, method: str, headers: Headers, body: bytes) -> Reply | Pending:
        try:
            if method != "POST":
                raise ClientError(405, "/admin/reload accepts POST")
            token = self.config.admin_token
            if token is None:
                raise ClientError(403, "reload is disabled: the server has no ADMIN_TOKEN")
            _check_bearer(headers, token)
            document = load_json(body)
            uri = document.get("model_uri")
            registration = document.get("registration")
            if not isinstance(uri, str) or not uri:
                raise ClientError(400, "'model_uri' must be a file path or a models:/ URI")
            if registration is not None and not isinstance(registration, str):
                raise ClientError(400, "'registration' must be a path to a registration record")
        except ClientError as exc:
            return error_reply(exc.status, exc.message)
        return self._swap(uri, registration)

    async def _swap(self, uri: str, registration: str | None) -> Reply:
        async with self._reload_lock:
            previous = self.model
            try:
                try:
                    candidate = await asyncio.wait_for(
                        _in_daemon_thread(self._loader, uri, registration),
                        self.config.reload_timeout_s,
                    )
                except asyncio.TimeoutError:  # the thread is abandoned; it holds nothing
                    raise ModelError(
                        f"not loaded within RELOAD_TIMEOUT_S={self.config.reload_timeout_s:g}"
                    ) from None
                _check_compatible(previous, candidate)
            except Exception as exc:
                self.metrics.record_reload(success=False)
                reason = str(exc) if isinstance(exc, ModelError) else "internal error"
                log.error(
                    "reload failed; the previous model keeps serving",
                    extra={"model_uri": uri, "reason": reason},
                    exc_info=not isinstance(exc, ModelError),
                )
                body = {"error": f"reload failed: {reason}", "serving": _identity(previous)}
                return Reply(422 if isinstance(exc, ModelError) else 500, orjson.dumps(body))
            self.model = candidate
            self.metrics.set_model(
                candidate.name, candidate.version, candidate.git_commit, candidate.num_classes
            )
            self.metrics.record_reload(success=True)
        identities = {"previous": _identity(previous), "current": _identity(candidate)}
        log.info("model reloaded", extra=identities)
        return Reply(200, orjson.dumps({"status": "reloaded", **identities}))

    # -- input sample for the drift monitor ----------------------------------------------------

    def _new_sampler(self, model: LoadedModel) -> InputSampler | None:
        if self.config.input_sample_size == 0:
            return None
        return InputSampler(
            self.config.input_sample_size,
            model.features,
            self.config.input_sample_window_s,
            now=perf_counter(),
            now_unix=time.time(),
        )

    def _sample(self, method: str, headers: Headers) -> Reply:
        """The reservoir of recent inputs; raw user inputs, so behind its own bearer token."""
        try:
            if method not in ("GET", "HEAD"):
                raise ClientError(405, "/monitoring/sample accepts GET")
            if self.config.sample_token is None:
                raise ClientError(
                    403, "the input sample is disabled: the server has no SAMPLE_TOKEN"
                )
            _check_bearer(headers, self.config.sample_token)
            if self.sampler is None:
                raise ClientError(404, "input sampling is off (INPUT_SAMPLE_SIZE=0)")
        except ClientError as exc:
            return error_reply(exc.status, exc.message)
        model = self.model
        document = {
            "model_name": model.name,
            "model_version": model.version,
            "features": self.sampler.features,
            **self.sampler.snapshot(perf_counter()),
        }
        return Reply(200, orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY))


def _body_headers(headers: Headers, binary_allowed: bool) -> int | None:
    """The headers that change how a body is read: -> the binary extension's JSON length."""
    header_length: int | None = None
    for key, value in headers:
        if key == b"inference-header-content-length":
            if not binary_allowed:
                raise ClientError(400, "binary tensors are accepted by v2 infer only")
            if not value.isdigit() or len(value) > 12:
                raise ClientError(400, "Inference-Header-Content-Length must be a byte count")
            header_length = int(value)
        elif key == b"content-encoding" and value.lower() != b"identity":
            raise ClientError(
                415,
                f"Content-Encoding {value.decode('latin-1')!r} is not supported; send the "
                "body uncompressed",
            )
    return header_length


def confined_path(directory: str | None, requested: str, field: str) -> Path:
    """``requested`` (relative to ``directory``, or absolute) resolved, symlinks included, and
    refused unless it lies under ``directory``. The refusal reads the same whether or not the
    path exists, so the reload endpoint cannot be used to probe the file system."""
    if directory is None:
        raise ModelError(f"{field}: reloading from files is off: set MODEL_DIR")
    base = Path(directory).resolve()
    candidate = (base / requested).resolve()
    if not candidate.is_relative_to(base) or candidate == base:
        raise ModelError(f"{field} must name a file under the model directory (MODEL_DIR)")
    return candidate


async def _in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """Run ``function`` in a daemon thread: unlike the default executor, a call stuck in the
    kernel (a hung network file system) can be abandoned and does not hold the shutdown."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # abandoned after its timeout
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = function(*args), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop closed meanwhile
            pass

    threading.Thread(target=work, name="reload", daemon=True).start()
    return await future


def _check_bearer(headers: Headers, token: str) -> None:
    found = [value for key, value in headers if key == b"authorization"]
    if len(found) > 1:  # which one a proxy in front checked cannot be known
        raise ClientError(400, "more than one Authorization header")
    scheme, _, credential = (found[0] if found else b"").partition(b" ")
    if scheme.lower() != b"bearer" or not hmac.compare_digest(credential, token.encode()):
        raise ClientError(401, "missing or wrong bearer token")


class _InjectedFault(ClientError):
    """Not the client's fault, but answered the same way: a status and a JSON reason."""

    def __init__(self) -> None:
        super().__init__(503, "injected fault (FAULT_ERROR_RATE): try again")


def _check_compatible(previous: LoadedModel, candidate: LoadedModel) -> None:
    """A reload must not change the API under its clients: same input width, same classes."""
    if (candidate.features, candidate.num_classes) != (previous.features, previous.num_classes):
        raise ModelError(
            f"{candidate.source}: takes [batch, {candidate.features}] and predicts "
            f"{candidate.num_classes} classes; the served API is [batch, {previous.features}] "
            f"with {previous.num_classes} classes (deploy a new service for a new signature)"
        )


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    """The v2 model metadata response."""
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, model.features]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, model.num_classes]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
    }


def _identity(model: LoadedModel) -> dict[str, str]:
    return {
        "model_name": model.name,
        "version": model.version,
        "git_commit": model.git_commit,
        "onnx_sha256": model.sha256,
        "source": model.source,
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlops-gitops")
    except PackageNotFoundError:
        return "0"
