"""Fixtures of the monitoring tier: a small served model (the serving tier's ONNX builder), a
fake HTTP server on loopback standing in for GitLab, the Argo Server or a Pushgateway, a clock."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ml.serving.model import LoadedModel, load_model
from tests.serving.conftest import make_onnx, write_registration


def write_digits_split(
    folder: Path, live: Callable[[np.ndarray], np.ndarray] = lambda rows: rows
) -> None:
    """`train.npz` (1,200 digits) and `live.npz` (the other 597, through `live`, with labels) in
    `folder`, shuffled first: the data set is ordered by writer, and its last third really is
    drifted."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order]
    np.savez(folder / "train.npz", X=x[:1200], y=y[:1200])
    np.savez(folder / "live.npz", X=live(x[1200:]), labels=y[1200:])


@pytest.fixture
def model(tmp_path: Path) -> LoadedModel:
    """A linear softmax model honouring the serving contract, registered as version 7."""
    path = make_onnx(tmp_path / "v7" / "model.onnx", seed=7)
    write_registration(path, version="7")
    return load_model(str(path))


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


Route = Callable[[Recorded], tuple[int, Any]]


@dataclass
class FakeHTTP:
    """A real HTTP server on a loopback port: records every request, answers from `routes`.

    A route is keyed by "METHOD /path" (no query) and returns (status, JSON body). Unknown
    routes answer 404, so a request the test did not expect fails loudly.
    """

    url: str
    requests: list[Recorded] = field(default_factory=list)
    routes: dict[str, Route] = field(default_factory=dict)

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]


@pytest.fixture
def fake_http() -> Iterator[FakeHTTP]:
    state: dict[str, FakeHTTP] = {}

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            fake = state["fake"]
            parsed = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            record = Recorded(
                self.command,
                parsed.path,  # raw: GitLab project paths arrive URL-encoded (mlops%2Fgitops)
                parse_qs(parsed.query),
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length),
            )
            fake.requests.append(record)
            route = fake.routes.get(f"{self.command} {record.path}")
            status, body = route(record) if route else (404, {"message": "no such route"})
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["fake"] = FakeHTTP(f"http://127.0.0.1:{server.server_address[1]}")
    # a short poll interval: shutdown() waits for the next poll (0.5 s by default)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state["fake"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class FakeClock:
    """A controllable clock for cool-downs: `clock.advance(hours=25)`."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, hours: float) -> None:
        self.now += hours * 3600
