"""The service as a raw ASGI application.

A framework router, request object and middleware stack cost more per request than the model
does (~30 us), so routing is a dict lookup and a prefix split, bodies are read straight from
``receive`` and responses are two ``send`` calls. Inference runs inline on the event loop: it is
shorter than a thread-pool hand-off, and it keeps every metric update on one thread.
The current model is one attribute; a reload builds a new ``LoadedModel`` off the loop and swaps
the reference, so a request in flight finishes on the model it started with.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any

import numpy as np
import orjson

from ml.serving.codec import (
    ClientError,
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

log = logging.getLogger("ml.serving")

_JSON = [(b"content-type", b"application/json")]
_TEXT = b"text/plain; version=0.0.4; charset=utf-8"
_SERVER_NAME = "ml-serving"


class ModelService:
    """ASGI callable: ``uvicorn.run(ModelService(model, config))``."""

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
        self._max_body = config.max_body_bytes
        self._max_batch = config.max_batch
        self.metrics.set_model(model.name, model.version, model.git_commit, model.num_classes)
        self.sampler = self._new_sampler(model)
        self._get_routes: dict[str, Callable[[], tuple[int, bytes]]] = {
            "/v2/health/live": lambda: (200, b'{"live":true}'),
            "/v2/health/ready": lambda: (200, b'{"ready":true}'),
            "/v2": self._server_metadata,
            "/metadata": lambda: (200, orjson.dumps(self.model.metadata(), default=str)),
        }

    def _load(self, uri: str, registration: str | None) -> LoadedModel:
        return load_model(
            uri,
            registration,
            name=self.config.model_name,
            intra_op_threads=self.config.intra_op_threads,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path == "/predict":
                await self._inference(scope, receive, send, "predict", None)
            elif path.startswith("/v2/models/"):
                await self._models(scope, receive, send, path[11:])
            elif path == "/metrics":
                await self._respond(send, 200, self.metrics.exposition(), _TEXT)
            elif path == "/admin/reload":
                await self._reload(scope, receive, send)
            elif path == "/monitoring/sample":
                await self._sample(scope, send)
            else:
                handler = self._get_routes.get(path.rstrip("/") or path)
                if handler is None:
                    await self._error(send, 404, f"no route for {path}")
                elif scope["method"] not in ("GET", "HEAD"):
                    await self._error(send, 405, f"{path} accepts GET")
                else:
                    status, body = handler()
                    await self._respond(send, status, body)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- inference ---------------------------------------------------------------------------

    async def _inference(
        self, scope: Scope, receive: Receive, send: Send, endpoint: str, target: str | None
    ) -> None:
        started = perf_counter()
        model = self.model
        rows = None
        self.metrics.in_flight += 1
        try:
            if scope["method"] != "POST":
                raise ClientError(405, f"{scope['path']} accepts POST")
            if target is not None:
                self._check_target(model, target)
            body = await self._read_body(scope, receive)
            if endpoint == "predict":
                rows = decode_predict(body, model, self._max_batch)
            else:
                request = decode_infer(body, model, self._max_batch)
                rows = request.rows
            if self.faults.active:
                await self._inject_faults()
                served = self.faults.degrade(rows)
            else:
                served = rows
            probabilities, labels = model.predict(served)
            if endpoint == "predict":
                payload = encode_predict(model, probabilities, labels)
            else:
                payload = encode_infer(model, request, probabilities, labels)
            status = 200
        except ClientError as exc:  # includes the injected 503s
            status, payload, rows = exc.status, error_body(exc.message), None
        except Exception:  # a server fault: say so, keep serving, log the traceback
            log.exception("inference failed", extra={"endpoint": endpoint})
            status, payload, rows = 500, error_body("internal error while predicting"), None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
        finally:
            self.metrics.in_flight -= 1
        self.metrics.record_request(endpoint, status, perf_counter() - started)
        if rows is not None:
            self._record_predictions(model, rows, probabilities, labels, started)

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
        scale = model.features * model.pixel_max
        if labels.shape[0] == 1:  # scalar path: numpy reductions cost microseconds each
            label = int(labels[0])
            self.metrics.record_prediction(
                label, probabilities.item(0, label), float(rows.sum()) / scale
            )
        else:
            self.metrics.record_batch(labels, probabilities.max(axis=1), rows.sum(axis=1) / scale)

    async def _inject_faults(self) -> None:
        if self.faults.should_fail():
            raise _InjectedFault()
        if self.faults.latency_s > 0.0:
            await asyncio.sleep(self.faults.latency_s)

    def _check_target(self, model: LoadedModel, target: str) -> None:
        name, _, version = target.partition("/versions/")
        if name != model.name:
            raise ClientError(404, f"unknown model {name!r}; this server serves {model.name!r}")
        if version and version != model.version:
            raise ClientError(
                404, f"unknown version {version!r} of {name!r}; serving version {model.version!r}"
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit():
                    raise ClientError(400, "invalid Content-Length header")
                if int(value) > self._max_body:
                    raise ClientError(413, f"body exceeds MAX_BODY_BYTES={self._max_body}")
            elif key == b"inference-header-content-length":
                raise ClientError(
                    415, "the binary tensor extension is not supported; send JSON tensors"
                )
        message = await receive()
        body: bytes = message.get("body", b"")
        while message.get("more_body", False):
            message = await receive()
            body += message.get("body", b"")
            if len(body) > self._max_body:
                raise ClientError(413, f"body exceeds MAX_BODY_BYTES={self._max_body}")
        return body

    # -- v2 model routes ---------------------------------------------------------------------

    async def _models(self, scope: Scope, receive: Receive, send: Send, rest: str) -> None:
        if rest.endswith("/infer"):
            await self._inference(scope, receive, send, "infer", rest[:-6])
            return
        if scope["method"] not in ("GET", "HEAD"):
            await self._error(send, 405, f"{scope['path']} accepts GET")
            return
        model = self.model
        ready = rest.endswith("/ready")
        try:
            self._check_target(model, rest[:-6] if ready else rest.rstrip("/"))
        except ClientError as exc:
            await self._error(send, exc.status, exc.message)
            return
        if ready:
            await self._respond(send, 200, orjson.dumps({"name": model.name, "ready": True}))
        else:
            await self._respond(send, 200, orjson.dumps(model_metadata(model)))

    def _server_metadata(self) -> tuple[int, bytes]:
        document = {"name": _SERVER_NAME, "version": _version(), "extensions": []}
        return 200, orjson.dumps(document)

    # -- hot reload --------------------------------------------------------------------------

    async def _reload(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["method"] != "POST":
                raise ClientError(405, "/admin/reload accepts POST")
            self._authorize(scope)
            document = load_json(await self._read_body(scope, receive))
            uri = document.get("model_uri")
            registration = document.get("registration")
            if not isinstance(uri, str) or not uri:
                raise ClientError(400, "'model_uri' must be a file path or a models:/ URI")
            if registration is not None and not isinstance(registration, str):
                raise ClientError(400, "'registration' must be a path to a registration record")
        except ClientError as exc:
            await self._error(send, exc.status, exc.message)
            return
        async with self._reload_lock:
            previous = self.model
            try:
                candidate = await asyncio.to_thread(self._loader, uri, registration)
                _check_compatible(previous, candidate)
            except Exception as exc:
                self.metrics.record_reload(success=False)
                reason = str(exc) if isinstance(exc, ModelError) else "internal error"
                log.error(
                    "reload failed; the previous model keeps serving",
                    extra={"model_uri": uri, "reason": reason},
                    exc_info=not isinstance(exc, ModelError),
                )
                body = {
                    "error": f"reload failed: {reason}",
                    "serving": _identity(previous),
                }
                await self._respond(
                    send, 422 if isinstance(exc, ModelError) else 500, orjson.dumps(body)
                )
                return
            self.model = candidate
            self.metrics.set_model(
                candidate.name, candidate.version, candidate.git_commit, candidate.num_classes
            )
            self.metrics.record_reload(success=True)
        log.info(
            "model reloaded",
            extra={"previous": _identity(previous), "current": _identity(candidate)},
        )
        await self._respond(
            send,
            200,
            orjson.dumps(
                {
                    "status": "reloaded",
                    "previous": _identity(previous),
                    "current": _identity(candidate),
                }
            ),
        )

    def _authorize(self, scope: Scope) -> None:
        token = self.config.admin_token
        if token is None:
            raise ClientError(403, "reload is disabled: the server has no ADMIN_TOKEN")
        _check_bearer(scope, token)

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

    async def _sample(self, scope: Scope, send: Send) -> None:
        """The reservoir of recent inputs; raw user inputs, so behind its own bearer token."""
        try:
            if scope["method"] not in ("GET", "HEAD"):
                raise ClientError(405, "/monitoring/sample accepts GET")
            if self.config.sample_token is None:
                raise ClientError(
                    403, "the input sample is disabled: the server has no SAMPLE_TOKEN"
                )
            _check_bearer(scope, self.config.sample_token)
            if self.sampler is None:
                raise ClientError(404, "input sampling is off (INPUT_SAMPLE_SIZE=0)")
        except ClientError as exc:
            await self._error(send, exc.status, exc.message)
            return
        model = self.model
        document = {
            "model_name": model.name,
            "model_version": model.version,
            "features": self.sampler.features,
            **self.sampler.snapshot(perf_counter()),
        }
        await self._respond(send, 200, orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY))

    # -- plumbing ----------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                log.info(
                    "serving",
                    extra={
                        "model": _identity(self.model),
                        "faults": self.config.faults.describe() if self.faults.active else None,
                    },
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                log.info("stopped: in-flight requests drained")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _error(self, send: Send, status: int, message: str) -> None:
        await self._respond(send, status, error_body(message))

    @staticmethod
    async def _respond(
        send: Send, status: int, body: bytes, content_type: bytes = b"application/json"
    ) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _check_bearer(scope: Scope, token: str) -> None:
    supplied = b""
    for key, value in scope["headers"]:
        if key == b"authorization":
            supplied = value
    scheme, _, credential = supplied.partition(b" ")
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
