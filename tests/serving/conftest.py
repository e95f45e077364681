"""Fixtures for the model service: small ONNX models honouring (or breaking) the serving contract,
an in-process ASGI caller, and real servers on free loopback ports (in a thread or a subprocess)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ml.serving.app import ModelService
from ml.serving.config import ServingConfig
from ml.serving.model import LoadedModel, load_model

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-admin-token-0123456789"


def make_onnx(
    path: Path,
    features: int = 64,
    classes: int = 10,
    seed: int = 0,
    input_name: str = "input",
    pixel_max: float = 16.0,
    label_offset: int = 0,
    softmax: bool = True,
    fixed_batch: bool = False,
    label_name: str = "label",
) -> Path:
    """A linear softmax classifier with the serving contract's names, dtypes and dynamic batch.

    Broken variants: ``label_offset`` != 0 makes ``label`` disagree with argmax(probabilities);
    ``softmax=False`` emits raw logits; ``fixed_batch`` fails on any batch but 1; ``label_name``
    renames an output.
    """
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(features, classes)).astype(np.float32)
    bias = rng.normal(size=classes).astype(np.float32)
    first = input_name
    nodes = []
    if fixed_batch:
        nodes.append(helper.make_node("Reshape", [input_name, "one_row"], ["one"]))
        first = "one"
    nodes += [
        helper.make_node("Div", [first, "pixel_max"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "weights"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
        helper.make_node("Softmax" if softmax else "Identity", ["logits"], ["probabilities"]),
        helper.make_node("ArgMax", ["probabilities"], ["argmax"], axis=1, keepdims=0),
        helper.make_node("Add", ["argmax", "offset"], ["shifted"]),
        helper.make_node("Mod", ["shifted", "classes"], [label_name]),
    ]
    initializers = [
        numpy_helper.from_array(np.array(pixel_max, dtype=np.float32), "pixel_max"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(np.array(label_offset, dtype=np.int64), "offset"),
        numpy_helper.from_array(np.array(classes, dtype=np.int64), "classes"),
        numpy_helper.from_array(np.array([1, features], dtype=np.int64), "one_row"),
    ]
    graph = helper.make_graph(
        nodes,
        "fixture",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", features])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info(label_name, TensorProto.INT64, ["batch"]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_registration(model_path: Path, version: str = "7", **extra: Any) -> Path:
    """A registration record as the register stage writes it (valid for ml.registration)."""
    gate = {"gate": "min_accuracy", "measured": 0.97, "limit": 0.95, "passed": True}
    record = {
        "model_name": "digits-classifier",
        "catalog_name": "digits",
        "app": "digits-classifier",
        "version": version,
        "alias": "candidate",
        "model_uri": f"models:/digits-classifier/{version}",
        "run_id": f"run-{version}",
        "git_commit": f"commit-{version}",
        "data_hash": "d" * 64,
        "params_hash": "e" * 64,
        "params": {"seed": 42},
        # the digits' declared input: what the service scales its input metric by
        "input": {"kind": "image", "shape": [8, 8], "range": [0, 16], "normalisation": "range"},
        "task": {"type": "multiclass", "classes": [str(digit) for digit in range(10)]},
        "metrics": {"accuracy": 0.97, "macro_f1": 0.96, "roc_auc": 0.99},
        "baselines": {"majority": {"accuracy": 0.1}},
        "latency": {
            "p50_ms": 0.05,
            "p99_ms": 0.1,
            "mean_ms": 0.06,
            "samples": 100,
            "gate": {"gate": "max_p99_ms", "measured": 0.1, "limit": 10.0, "passed": True},
        },
        "onnx_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
        "registered_at": "2026-11-01T00:00:00+00:00",
        "gates": [gate],
        **extra,
    }
    path = model_path.with_name("registration.json")
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A model directory as the pipeline writes it: model.onnx + registration.json (version 7)."""
    make_onnx(tmp_path / "v7" / "model.onnx", seed=7)
    write_registration(tmp_path / "v7" / "model.onnx", version="7")
    return tmp_path / "v7"


@pytest.fixture
def other_model_dir(tmp_path: Path) -> Path:
    """A second valid model (version 8, different weights) to reload into."""
    make_onnx(tmp_path / "v8" / "model.onnx", seed=8)
    write_registration(tmp_path / "v8" / "model.onnx", version="8")
    return tmp_path / "v8"


@pytest.fixture
def model(model_dir: Path) -> LoadedModel:
    return load_model(str(model_dir / "model.onnx"))


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class AsgiClient:
    """Calls the ASGI app directly: the exact bytes a server would exchange, no sockets."""

    app: ModelService
    calls: list[str] = field(default_factory=list)

    async def arequest(
        self,
        method: str,
        path: str,
        body: bytes | str | Any = b"",
        headers: dict[str, str] | None = None,
        chunk: int | None = None,
        content_length: bool = True,
    ) -> Response:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        payload = body.encode() if isinstance(body, str) else body
        raw_headers = [(b"host", b"test")]
        if payload and content_length:
            raw_headers.append((b"content-length", str(len(payload)).encode()))
        for key, value in (headers or {}).items():
            raw_headers.append((key.lower().encode(), value.encode()))
        pieces = (
            [payload]
            if chunk is None
            else [payload[i : i + chunk] for i in range(0, len(payload), chunk)] or [b""]
        )
        messages = [
            {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
            for i, piece in enumerate(pieces)
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "headers": raw_headers}
        await self.app(scope, receive, send)
        start, end = sent[0], sent[1]
        assert start["type"] == "http.response.start" and end["type"] == "http.response.body"
        response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
        assert int(response_headers["content-length"]) == len(end["body"])
        return Response(start["status"], response_headers, end["body"])

    def request(self, method: str, path: str, body: Any = b"", **kwargs: Any) -> Response:
        return asyncio.run(self.arequest(method, path, body, **kwargs))

    def post(self, path: str, body: Any = b"", **kwargs: Any) -> Response:
        return self.request("POST", path, body, **kwargs)

    def get(self, path: str) -> Response:
        return self.request("GET", path)


def make_app(model: LoadedModel, **config: Any) -> ModelService:
    return ModelService(model, ServingConfig(**config))


@pytest.fixture
def client(model: LoadedModel, tmp_path: Path) -> AsgiClient:
    """The app with reload on; every model fixture of the test lives under its MODEL_DIR."""
    return AsgiClient(make_app(model, admin_token=TOKEN, model_dir=str(tmp_path)))


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` from a text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in exposition.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        metric, _, rest = series.partition("{")
        found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if metric == name and found == wanted:
            return float(value)
    return 0.0


def digits_rows(n: int, seed: int = 0) -> np.ndarray:
    """Plausible raw pixel rows: integers 0..16 as float32."""
    return np.random.default_rng(seed).integers(0, 17, size=(n, 64)).astype(np.float32)


# -- real servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` (every 10 ms) until it returns a truthy value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@contextmanager
def threaded_server(config: ServingConfig) -> Iterator[tuple[str, Any]]:
    """The real uvicorn server from ``build_server`` in a thread, on a pre-bound loopback socket."""
    from ml.serving.server import build_server

    server = build_server(config)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="server start")
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "server thread did not stop"


def service_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FAULT_", "MODEL_", "MLFLOW_")) and k not in ("PORT", "DEPLOY_ENV")
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@contextmanager
def subprocess_server(
    argv: list[str], env: dict[str, str], cwd: Path = REPO
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start ``argv`` (a service listening on env PORT); yield once /v2/health/ready answers 200."""
    port = env["PORT"]
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(argv, env=env, cwd=cwd, stderr=subprocess.PIPE)

    def ready() -> bool:
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"server exited with {process.returncode}:\n{stderr}")
        try:
            return httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=30, what=f"{' '.join(argv)} to be ready")
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr:
            process.stderr.close()
