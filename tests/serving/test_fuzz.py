"""Fuzzing the HTTP layer with raw bytes: mutated HTTP requests (every framing header, smuggling
shapes, bodies) and plain noise, each on its own connection into the real server process.

The server must answer every request it can read with a 2xx or a 4xx carrying a JSON reason (never
a 5xx), log no error and no traceback, stay alive and stay under a memory bound. Bounded: at most
FUZZ_EXAMPLES examples (default 300) and FUZZ_SECONDS seconds (default 30); `make fuzz-serving`
runs a long session.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import REPO, free_port, service_env, wait_until

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ_SECONDS = float(os.environ.get("FUZZ_SECONDS", "30"))
RSS_LIMIT_MB = 150.0  # the service idles near 80 MB
BODY = b'{"instances": [[' + b",".join([b"1"] * 64) + b"]]}"

methods = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"DELETE", b"PRI", b"G"])
paths = st.sampled_from(
    [
        b"/predict",
        b"/v2/models/digits-classifier/infer",
        b"/v2/health/ready",
        b"/metadata",
        b"/admin/reload",
        b"/metrics",
        b"*",
        b"http://h/predict",
        b"/%00%ff",
        b"/" + b"a" * 9000,
    ]
) | st.binary(max_size=40)
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.", b""])
header_names = st.sampled_from(
    [
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"connection",
        b"authorization",
        b"inference-header-content-length",
        b"content-encoding",
        b"upgrade",
        b"trailer",
        b"transfer-encoding ",
        b"x-a",
    ]
) | st.binary(min_size=1, max_size=20)


header_values = st.sampled_from(
    [b"chunked", b"0", b"5", b"-1", b"+5", b"99999999999999999999", b"100-continue", b"close",
     b"keep-alive", b"Bearer x", b"gzip", b"h2c", b"t", b"chunked, identity", b"a\x00b", b" 5 "]
) | st.binary(max_size=60)  # fmt: skip


def v2_body(shape: list[int], data: list[float]) -> bytes:
    tensor = {"name": "input", "datatype": "FP32", "shape": shape, "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


bodies = st.sampled_from(
    [
        b"",
        BODY,
        b"0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nauthorization: x\r\n\r\n",
        b"ffffffffff\r\n",
        v2_body([1, 64], [1.0] * 64),
        v2_body([1] * 100, [1.0]),
        v2_body([2**40, 2**40], [1.0]),
        b'{"model_uri": "/etc/passwd"}',
        b'{"instances": [[1e999]]}',
    ]
) | st.binary(max_size=300)


@st.composite
def http_like(draw: st.DrawFn) -> bytes:
    """A request assembled from hostile parts, then optionally mutated byte by byte."""
    line = draw(methods) + b" " + draw(paths) + b" " + draw(versions) + b"\r\n"
    pairs = draw(st.lists(st.tuples(header_names, header_values), max_size=8))
    headers = b"".join(name + b": " + value + b"\r\n" for name, value in pairs)
    raw = bytearray(line + headers + b"\r\n" + draw(bodies))
    mutations = draw(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=3))
    for position, byte in mutations:
        raw.insert(position % (len(raw) + 1), byte)
    return bytes(raw) * draw(st.integers(1, 3))  # pipelined copies


@st.composite
def well_framed(draw: st.DrawFn) -> bytes:
    """An inference request with a correct Host and Content-Length, so its hostile body reaches
    the application; some pipelined behind each other."""
    path = draw(st.sampled_from([b"/predict", b"/v2/models/digits-classifier/infer"]))
    body = draw(bodies)
    extra = draw(
        st.lists(
            st.sampled_from(
                [
                    b"expect: 100-continue",
                    b"connection: close",
                    b"inference-header-content-length: 5",
                ]
            ),
            max_size=2,
        )
    )
    head = [b"POST " + path + b" HTTP/1.1", b"host: t", b"content-length: %d" % len(body), *extra]
    return (b"\r\n".join(head) + b"\r\n\r\n" + body) * draw(st.integers(1, 3))


def statuses_and_reasons(data: bytes) -> list[tuple[int, bool]]:
    """(status, has a JSON reason) for each response in ``data`` (content-length framed)."""
    found = []
    while data.startswith(b"HTTP/1.1 "):
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length and (not rest or rest.startswith(b"HTTP/1.1 ")):  # answer to a HEAD
            found.append((status, True))
            data = rest
            continue
        body, data = rest[:length], rest[length:]
        reason = False
        if status >= 400:
            try:
                reason = isinstance(json.loads(body).get("error"), str)
            except (ValueError, AttributeError):
                reason = False
        found.append((status, reason or status < 400))
    return found


@pytest.fixture(scope="module")
def fuzzed_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, subprocess.Popen[bytes], Path]]:
    from .conftest import make_onnx

    directory = tmp_path_factory.mktemp("fuzz")
    make_onnx(directory / "model.onnx")
    port = free_port()
    log = directory / "server.log"
    env = service_env(
        MODEL_URI=str(directory / "model.onnx"),
        PORT=str(port),
        LOG_LEVEL="warning",
        ADMIN_TOKEN="fuzz-admin-token-0123456789",
        HEADER_TIMEOUT_S="1",
        BODY_TIMEOUT_S="1",
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "ml.serving"], env=env, cwd=REPO, stderr=sink
        )

    def ready() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, what="the fuzzed server")
    try:
        yield port, process, log
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_fuzzed_bytes_get_4xx_reasons_never_5xx_and_memory_stays_bounded(
    fuzzed_server: tuple[int, subprocess.Popen[bytes], Path],
) -> None:
    port, process, log = fuzzed_server
    started = time.monotonic()
    seen = {"examples": 0, "answers": 0}

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(raw=well_framed() | http_like() | st.binary(min_size=1, max_size=500))
    def one(raw: bytes) -> None:
        if time.monotonic() - started > FUZZ_SECONDS:
            return  # the time budget is spent: the remaining examples pass untried
        seen["examples"] += 1
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)  # no more bytes: a partial request never completes
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        answers = statuses_and_reasons(data)
        seen["answers"] += len(answers)
        for status, reason in answers:
            assert status < 500 and reason, (raw[:200], data[:300])

    one()
    print(f"fuzz: {seen}")
    assert seen["examples"] >= min(FUZZ_EXAMPLES, 50) and seen["answers"] > 0, seen
    assert process.poll() is None, "the server died"
    assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200
    rss = psutil.Process(process.pid).memory_info().rss / 2**20
    assert rss < RSS_LIMIT_MB, f"resident memory {rss:.0f} MB after fuzzing"
    logged = log.read_text()
    assert "Traceback" not in logged and '"level":"error"' not in logged, logged[-2000:]
