"""The built-in HTTP/1.1 layer (ml/serving/http.py) over real loopback sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml.serving.config import FaultConfig, ServingConfig

from .conftest import digits_rows, threaded_server, wait_until

BODY = ('{"instances": [' + ",".join(["1.0"] * 64).join("[]") + "]}").encode()


@pytest.fixture
def server(model_dir: Path) -> Iterator[tuple[str, int]]:
    config = ServingConfig(model_uri=str(model_dir / "model.onnx"), max_body_bytes=4096)
    with threaded_server(config) as (base, _server):
        yield base, int(base.rsplit(":", 1)[1])


def exchange(
    port: int, raw: bytes, responses: int = 1, timeout: float = 10.0, half_close: bool = False
) -> list[bytes]:
    """Send raw bytes on one connection and read ``responses`` complete answers (or EOF)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        if half_close:  # no more requests: a partial one is never completed
            sock.shutdown(socket.SHUT_WR)
        return read_responses(sock, responses)


def read_responses(sock: socket.socket, count: int, head_only: bool = False) -> list[bytes]:
    buffer, answers = b"", []
    while len(answers) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if head.startswith("HTTP/1.1 100"):
                answers.append(buffer[: head_end + 4])
                buffer = buffer[head_end + 4 :]
                continue
            total = head_end + 4 + (0 if head_only else length)
            if len(buffer) >= total:
                answers.append(buffer[:total])
                buffer = buffer[total:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return answers


def post(path: str = "/predict", body: bytes = BODY, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def header(answer: bytes, name: str) -> str | None:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.lower() == name:
            return value.strip()
    return None


def test_keep_alive_and_pipelining_answer_in_order(server: tuple[str, int]) -> None:
    _, port = server
    raw = post() + b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\n\r\n" + post("/nope", b"{}")
    answers = exchange(port, raw, responses=3)
    assert [status(a) for a in answers] == [200, 200, 404]
    assert b'"predictions"' in answers[0] and answers[1].endswith(b'{"live":true}')
    assert header(answers[0], "date") and header(answers[0], "connection") is None


def test_pipelined_requests_wait_behind_a_delayed_answer(model_dir: Path) -> None:
    config = ServingConfig(
        model_uri=str(model_dir / "model.onnx"), faults=FaultConfig(latency_ms=100.0)
    )
    with threaded_server(config) as (base, _server):
        port = int(base.rsplit(":", 1)[1])
        raw = post() + b"GET /v2/health/ready HTTP/1.1\r\nhost: t\r\n\r\n" + post()
        answers = exchange(port, raw, responses=3)
    assert [status(a) for a in answers] == [200, 200, 200]
    assert b"predictions" in answers[0] and b"ready" in answers[1] and b"predictions" in answers[2]


def test_chunked_body_and_expect_continue(server: tuple[str, int]) -> None:
    _, port = server
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(BODY[i : i + 50]), BODY[i : i + 50]) for i in range(0, len(BODY), 50)
    )
    chunked = b"POST /predict HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
    assert status(exchange(port, chunked + chunks + b"0\r\n\r\n")[0]) == 200
    answers = exchange(port, post(extra="expect: 100-continue\r\n"), responses=2)
    assert answers[0].startswith(b"HTTP/1.1 100 Continue") and status(answers[1]) == 200


def test_head_connection_close_and_http_1_0(server: tuple[str, int]) -> None:
    _, port = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"HEAD /v2/health/live HTTP/1.1\r\nhost: t\r\n\r\n")
        head = read_responses(sock, 1, head_only=True)[0]
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\n\r\n")
        after = read_responses(sock, 1)[0]
    assert status(head) == 200 and header(head, "content-length") == "13"
    assert after.startswith(b"HTTP/1.1 200")  # no stray body bytes between the two answers
    closing = exchange(port, post(extra="connection: close\r\n"), responses=2)
    assert len(closing) == 1 and header(closing[0], "connection") == "close"
    old = exchange(port, b"GET /v2/health/ready HTTP/1.0\r\n\r\n", responses=2)
    assert len(old) == 1 and status(old[0]) == 200


def test_oversized_bodies_are_413_and_close(server: tuple[str, int]) -> None:
    _, port = server
    big = b"x" * 5000
    by_length = exchange(port, post(body=big) + post(), responses=2)
    assert len(by_length) == 1 and status(by_length[0]) == 413
    assert b"MAX_BODY_BYTES=4096" in by_length[0]
    chunked = b"POST /predict HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
    answers = exchange(port, chunked + b"1000\r\n" + b"y" * 4096 + b"\r\n" + b"10\r\n" + b"z" * 16)
    assert status(answers[0]) == 413


@pytest.mark.parametrize(
    "raw, code",
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: t\r\ncontent-length: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"x-h: 1\r\n" * 101 + b"\r\n", 431),
    ],
    ids=["garbage", "bad-length", "long-url", "many-headers"],
)
def test_unusable_requests_are_answered_and_closed(
    server: tuple[str, int], raw: bytes, code: int
) -> None:
    base, port = server
    answers = exchange(port, raw, responses=2)
    assert len(answers) == 1 and status(answers[0]) == code
    assert header(answers[0], "connection") == "close"
    assert httpx.get(f"{base}/v2/health/live").status_code == 200  # still serving


def test_upgrade_requests_are_answered_without_upgrading(server: tuple[str, int]) -> None:
    _, port = server
    raw = b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
    answers = exchange(port, raw + b"PRI * HTTP/2.0", responses=2)
    assert [status(a) for a in answers] == [200]  # answered as HTTP/1.1, then closed


def test_query_strings_and_percent_encoded_paths(server: tuple[str, int]) -> None:
    base, _ = server
    assert httpx.get(f"{base}/v2/health/ready?verbose=1").status_code == 200
    assert httpx.get(f"{base}/v2/models/digits%2Dclassifier").json()["name"] == "digits-classifier"


def test_idle_connections_are_closed_after_keep_alive(model_dir: Path) -> None:
    config = ServingConfig(model_uri=str(model_dir / "model.onnx"), keep_alive_s=1.0)
    with threaded_server(config) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\n\r\n")
            assert status(read_responses(sock, 1)[0]) == 200
            started = time.monotonic()
            assert sock.recv(1) == b""  # the server closed the idle connection
            assert 0.5 < time.monotonic() - started < 5
        wait_until(lambda: not server.connections, what="connection bookkeeping")


def test_a_client_that_does_not_read_is_not_read_either(server: tuple[str, int]) -> None:
    """Back-pressure: thousands of pipelined requests, answers unread; the server stays healthy."""
    base, port = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setblocking(False)
        request = b"GET /metadata HTTP/1.1\r\nhost: t\r\n\r\n"
        sent = 0
        try:
            for _ in range(20000):
                sent += sock.send(request)
        except BlockingIOError:
            pass
        assert sent > 0
        assert httpx.get(f"{base}/v2/health/live", timeout=5).status_code == 200


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(min_size=1, max_size=400))
def test_arbitrary_bytes_never_break_the_server(server: tuple[str, int], raw: bytes) -> None:
    base, port = server
    for answer in exchange(port, raw + b"\r\n\r\n", responses=1, timeout=5, half_close=True):
        assert status(answer) < 500
    assert httpx.get(f"{base}/v2/health/live", timeout=5).status_code == 200


def test_real_predictions_over_the_builtin_server(server: tuple[str, int]) -> None:
    base, _ = server
    rows = digits_rows(3)
    response = httpx.post(f"{base}/predict", json={"instances": rows.tolist()})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3


def test_wrong_token_is_401_with_a_bearer_challenge(model_dir: Path) -> None:
    config = ServingConfig(model_uri=str(model_dir / "model.onnx"), admin_token="t" * 20)
    with threaded_server(config) as (base, _server):
        response = httpx.post(f"{base}/admin/reload", json={"model_uri": "x"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_a_deep_pipeline_behind_a_delayed_answer_is_paused_then_answered(model_dir: Path) -> None:
    config = ServingConfig(
        model_uri=str(model_dir / "model.onnx"), faults=FaultConfig(latency_ms=200.0)
    )
    with threaded_server(config) as (base, _server):
        port = int(base.rsplit(":", 1)[1])
        quick = b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\n\r\n"
        answers = exchange(port, post() + quick * 40, responses=41)
    assert [status(a) for a in answers] == [200] * 41
    assert b"predictions" in answers[0] and all(a.endswith(b'{"live":true}') for a in answers[1:])


def test_shutdown_closes_idle_connections_and_aborts_stragglers(model_dir: Path) -> None:
    config = ServingConfig(
        model_uri=str(model_dir / "model.onnx"),
        faults=FaultConfig(latency_ms=5000.0),
        graceful_timeout_s=0.3,
    )
    with threaded_server(config) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\n\r\n")
        assert status(read_responses(idle, 1)[0]) == 200
        straggler = socket.create_connection(("127.0.0.1", port), timeout=10)
        straggler.sendall(post())
        wait_until(
            lambda: b"inference_requests_in_flight 1.0" in httpx.get(f"{base}/metrics").content,
            what="the slow request in flight",
        )
        started = time.monotonic()
    assert time.monotonic() - started < 5  # the 5 s request did not hold the shutdown
    assert idle.recv(1) == b""  # closed by the server, not left to its keep-alive timeout
    try:
        data = straggler.recv(1)
    except ConnectionResetError:
        data = b""
    assert data == b""  # aborted after the graceful timeout, without an answer
    idle.close()
    straggler.close()


def test_a_half_sent_request_does_not_hold_the_shutdown(model_dir: Path) -> None:
    """Half a header at SIGTERM: the header timeout ends it, not the (long) graceful timeout."""
    config = ServingConfig(
        model_uri=str(model_dir / "model.onnx"), header_timeout_s=0.5, graceful_timeout_s=20.0
    )
    with threaded_server(config) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(b"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-le")
        wait_until(lambda: any(c.busy for c in server.connections), what="the half request")
        started = time.monotonic()
    assert time.monotonic() - started < 3  # the block's exit waited for the server to stop
    answer = slow.recv(65536)
    assert status(answer) == 408 and b"HEADER_TIMEOUT_S=0.5" in answer
    slow.close()


def test_request_bytes_held_over_all_connections_are_capped_and_released(
    model_dir: Path,
) -> None:
    config = ServingConfig(
        model_uri=str(model_dir / "model.onnx"), max_body_bytes=4096, max_buffered_bytes=8192
    )
    with threaded_server(config) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        head = b"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-length: 4000\r\n\r\n"
        holders = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        for sock in holders[:2]:
            sock.sendall(head + b" " * 3000)
        wait_until(lambda: server.buffered == 6000, what="two bodies held")
        holders[2].sendall(head + b" " * 3000)  # 9000 > 8192
        refused = read_responses(holders[2], 1)[0]
        assert status(refused) == 503 and b"too many request bytes" in refused
        assert server.buffered == 6000
        for sock in holders:
            sock.close()
        wait_until(lambda: server.buffered == 0 and not server.connections, what="release")
        # answered, refused and pipelined requests all give their bytes back
        answers = exchange(port, post() + post(body=b"x" * 5000), responses=2)
        assert [status(a) for a in answers] == [200, 413]
        wait_until(lambda: server.buffered == 0, what="release after answers")


def test_many_small_chunks_are_framing_not_header_bytes(server: tuple[str, int]) -> None:
    """Chunk size lines count against nothing (up to a few bytes each); only what is neither
    body nor framing (headers, trailers) counts against MAX_HEADER_BYTES."""
    _, port = server
    body = BODY + b" " * (4000 - len(BODY))  # JSON allows the trailing whitespace
    chunks = b"".join(b"1\r\n%s\r\n" % body[i : i + 1] for i in range(len(body)))
    head = b"POST /predict HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
    answer = exchange(port, head + chunks + b"0\r\n\r\n")[0]
    assert status(answer) == 200, answer  # 4,000 chunks: ~24 KB of framing
    trailer = b"0\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n"
    refused = exchange(port, head + b"2\r\n{}\r\n" + trailer)[0]
    assert status(refused) == 431 and b"MAX_HEADER_BYTES" in refused
