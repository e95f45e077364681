"""The attack corpus: what a hostile client on the cluster network does to an HTTP model server.

Each case is a raw-socket attack with the behaviour a strict server shows (a 4xx with a JSON
reason, a close within its timeout + 1 s, memory that stays put) and a verdict over what the server
really did. ``tests/serving/test_attacks.py`` runs every case against this service's own HTTP
layer, uvicorn and granian (the same application behind each) and requires ours to be strict in
every case; ``make bench-serving`` runs it against ours again while probing the health endpoint
and sampling memory. Cases only talk to loopback addresses.

Every server under attack is started with ``ATTACK_ENV`` (short timeouts, so a run takes seconds);
a case reads the limits it checks from ``Target.limits``, never from constants of its own.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

# The limits every attacked server runs with (env of `python -m ml.serving`); short, so the
# timing cases finish in seconds. Each case's verdict is computed from these numbers.
ATTACK_ENV: dict[str, str] = {
    "HEADER_TIMEOUT_S": "1",
    "BODY_TIMEOUT_S": "1",
    "BODY_MIN_RATE": "65536",
    "KEEP_ALIVE_S": "2",
    "SEND_TIMEOUT_S": "2",
    "MAX_CONNECTIONS": "64",
    "MAX_BODY_BYTES": "1048576",
    "GRACEFUL_TIMEOUT_S": "5",
}
# a close later than its timeout by more than this is "held"
CLOSE_SLACK_S = 1.0
# resident memory a case may add to the server (leaks, unbounded buffers) before it counts as a miss
RSS_GROWTH_MB = 40.0


@dataclass(frozen=True)
class Limits:
    header_timeout_s: float
    body_timeout_s: float
    keep_alive_s: float
    send_timeout_s: float
    max_connections: int
    max_body_bytes: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        return cls(
            header_timeout_s=float(env["HEADER_TIMEOUT_S"]),
            body_timeout_s=float(env["BODY_TIMEOUT_S"]),
            keep_alive_s=float(env["KEEP_ALIVE_S"]),
            send_timeout_s=float(env["SEND_TIMEOUT_S"]),
            max_connections=int(env["MAX_CONNECTIONS"]),
            max_body_bytes=int(env["MAX_BODY_BYTES"]),
        )


@dataclass(frozen=True)
class Target:
    """A running server under attack: where it listens, its process, what it was told."""

    host: str
    port: int
    pid: int
    limits: Limits
    admin_token: str
    model_name: str
    features: int
    reload_body: bytes  # a valid reload request (the served model again)


@dataclass
class Outcome:
    case: str
    strict: bool
    observed: str


@dataclass(frozen=True)
class Case:
    name: str
    threat: str
    strict: str  # what a strict server does
    run: Callable[[Target], Awaitable[tuple[bool, str]]]
    # timing cases run side by side (each holds a connection and waits); the others one by one
    concurrent: bool = False


# -- a minimal HTTP/1.1 client over raw sockets -------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k == name]
        return found[-1] if found else None

    @property
    def json_reason(self) -> bool:
        """A JSON body with an ``error`` string: the service's shape for every refusal."""
        if "json" not in (self.header("content-type") or ""):
            return False
        try:
            document = json.loads(self.body)
        except ValueError:
            return False
        return isinstance(document, dict) and isinstance(document.get("error"), str)

    def describe(self) -> str:
        kind = "JSON" if self.json_reason else (self.header("content-type") or "no type")
        return f"{self.status} {kind}"


class Connection:
    """One raw connection: send bytes, read responses, notice the close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""

    @classmethod
    async def open(cls, target: Target) -> Connection:
        reader, writer = await asyncio.open_connection(target.host, target.port, limit=1 << 24)
        return cls(reader, writer)

    async def send(self, data: bytes) -> bool:
        """False when the server has closed or reset the connection."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def _fill(self, timeout: float) -> bool:
        try:
            chunk = await asyncio.wait_for(self.reader.read(1 << 16), timeout)
        except (ConnectionError, OSError):
            return False
        if not chunk:
            return False
        self.buffer += chunk
        return True

    async def response(self, timeout: float = 5.0) -> Response | None:
        """The next response (``100 Continue`` included), or None on close, reset or timeout."""
        deadline = time.monotonic() + timeout
        try:
            while b"\r\n\r\n" not in self.buffer:
                if not await self._fill(max(0.0, deadline - time.monotonic())):
                    return None
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[1].isdigit():
                return None
            headers = []
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower(), value.strip()))
            self.buffer = rest
            response = Response(int(parts[1]), headers, b"")
            if response.status < 200 or response.status in (204, 304):
                return response
            if (response.header("transfer-encoding") or "").lower() == "chunked":
                response.body = await self._chunked(deadline)
                return response
            length = response.header("content-length")
            if length is None:  # read to EOF
                while await self._fill(max(0.0, deadline - time.monotonic())):
                    pass
                response.body, self.buffer = self.buffer, b""
                return response
            size = int(length)
            while len(self.buffer) < size:
                if not await self._fill(max(0.0, deadline - time.monotonic())):
                    return None
            response.body, self.buffer = self.buffer[:size], self.buffer[size:]
            return response
        except asyncio.TimeoutError:
            return None

    async def _chunked(self, deadline: float) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buffer:
                if not await self._fill(max(0.0, deadline - time.monotonic())):
                    return body
            line, _, self.buffer = self.buffer.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            while len(self.buffer) < size + 2:
                if not await self._fill(max(0.0, deadline - time.monotonic())):
                    return body
            body += self.buffer[:size]
            self.buffer = self.buffer[size + 2 :]
            if size == 0:
                return body

    async def closed_within(self, seconds: float) -> float | None:
        """Seconds until the server closed (EOF or reset), reading and keeping any answer; None
        when it is still open after ``seconds``."""
        started = time.monotonic()
        while True:
            left = seconds - (time.monotonic() - started)
            if left <= 0:
                return None
            try:
                chunk = await asyncio.wait_for(self.reader.read(1 << 16), left)
            except asyncio.TimeoutError:
                return None
            except (ConnectionError, OSError):
                return time.monotonic() - started
            if not chunk:
                return time.monotonic() - started
            self.buffer += chunk

    def close(self) -> None:
        self.writer.transport.abort()


def request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    lines = [f"{method} {path} {version}", "host: attack"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body and not any(
        k.lower() in ("content-length", "transfer-encoding") for k in headers or {}
    ):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def predict_body(target: Target, rows: int = 1) -> bytes:
    row = "[" + ",".join(["1"] * target.features) + "]"
    return ('{"instances": [' + ",".join([row] * rows) + "]}").encode()


def _first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode("latin-1", "replace")[:60]


# -- verdict helpers ----------------------------------------------------------------------------


async def _refused_with_json(
    target: Target,
    raw: bytes,
    statuses: tuple[int, ...] = (),
    timeout: float = 5.0,
    within: float | None = None,
) -> tuple[bool, str]:
    """One request that must get a 4xx (one of ``statuses`` when given) with a JSON reason
    (``within`` seconds of being sent, when given), and nothing after it: what follows a refused
    request is not trusted."""
    connection = await Connection.open(target)
    try:
        started = time.monotonic()
        await connection.send(raw)
        answer = await connection.response(timeout)
        elapsed = time.monotonic() - started
        if answer is None:
            return False, "closed without an answer"
        extra = await connection.response(1.0)
        observed = answer.describe() + (f", then {extra.describe()}" if extra else "")
        strict = 400 <= answer.status < 500 and answer.json_reason and extra is None
        if statuses:
            strict = strict and answer.status in statuses
        if within is not None:
            strict = strict and elapsed < within
            observed += f" in {elapsed:.2f} s"
        return strict, observed
    finally:
        connection.close()


async def _held(connection: Connection, limit: float) -> tuple[bool, str]:
    """The server must close within ``limit`` + slack; a 408 on the way is fine (JSON or not)."""
    closed = await connection.closed_within(limit + CLOSE_SLACK_S + 1.0)
    said = f" after {_first_line(connection.buffer)!r}" if connection.buffer else ""
    if closed is None:
        return False, f"still open after {limit + CLOSE_SLACK_S + 1.0:.1f} s{said}"
    strict = closed <= limit + CLOSE_SLACK_S
    if connection.buffer and not connection.buffer.startswith(b"HTTP/1.1 4"):
        strict = False
    return strict, f"closed after {closed:.1f} s (limit {limit:.1f} s){said}"


# -- the cases ----------------------------------------------------------------------------------


CASES: list[Case] = []


def case(name: str, threat: str, strict: str, concurrent: bool = False) -> Callable[
    [Callable[[Target], Awaitable[tuple[bool, str]]]],
    Callable[[Target], Awaitable[tuple[bool, str]]],
]:
    """Registers an attack in CASES, in the order of this module."""

    def register(
        run: Callable[[Target], Awaitable[tuple[bool, str]]],
    ) -> Callable[[Target], Awaitable[tuple[bool, str]]]:
        CASES.append(Case(name, threat, strict, run, concurrent))
        return run

    return register


@case(
    "silent-connection",
    "a connection that never sends a byte",
    "closed by the header timeout",
    concurrent=True,
)
async def silent_connection(target: Target) -> tuple[bool, str]:
    connection = await Connection.open(target)
    try:
        return await _held(connection, target.limits.header_timeout_s)
    finally:
        connection.close()


@case(
    "one-byte",
    "one byte, then silence",
    "closed (408) by the header timeout",
    concurrent=True,
)
async def one_byte(target: Target) -> tuple[bool, str]:
    connection = await Connection.open(target)
    try:
        await connection.send(b"P")
        return await _held(connection, target.limits.header_timeout_s)
    finally:
        connection.close()


@case(
    "half-header",
    "half a header, then silence",
    "closed (408) by the header timeout",
    concurrent=True,
)
async def half_header(target: Target) -> tuple[bool, str]:
    connection = await Connection.open(target)
    try:
        await connection.send(b"POST /predict HTTP/1.1\r\nhost: attack\r\ncontent-le")
        return await _held(connection, target.limits.header_timeout_s)
    finally:
        connection.close()


@case(
    "header-drip",
    "slowloris: a header byte every 100 ms",
    "closed by the header timeout (not reset by each byte)",
    concurrent=True,
)
async def header_drip(target: Target) -> tuple[bool, str]:
    """Slowloris proper: a header byte every 100 ms, so no single gap looks idle."""
    connection = await Connection.open(target)
    try:
        limit = target.limits.header_timeout_s
        started = time.monotonic()
        await connection.send(b"GET /v2/health/live HTTP/1.1\r\nhost: attack\r\nx-drip: ")
        while time.monotonic() - started < limit + CLOSE_SLACK_S + 1.0:
            if not await connection.send(b"a"):
                break
            if await connection.closed_within(0.1) is not None:
                break
        else:
            return False, f"still open after {time.monotonic() - started:.1f} s of drip"
        elapsed = time.monotonic() - started
        return elapsed <= limit + CLOSE_SLACK_S, f"closed after {elapsed:.1f} s (limit {limit} s)"
    finally:
        connection.close()


@case(
    "half-body",
    "half a body, then silence",
    "closed (408) by the body timeout",
    concurrent=True,
)
async def half_body(target: Target) -> tuple[bool, str]:
    connection = await Connection.open(target)
    try:
        await connection.send(
            b'POST /predict HTTP/1.1\r\nhost: attack\r\ncontent-length: 1000\r\n\r\n{"inst'
        )
        return await _held(connection, target.limits.body_timeout_s)
    finally:
        connection.close()


@case(
    "body-drip",
    "a body byte every 100 ms",
    "closed (408) once below the minimum rate",
    concurrent=True,
)
async def body_drip(target: Target) -> tuple[bool, str]:
    """A body byte every 100 ms: alive, but far below any useful rate."""
    connection = await Connection.open(target)
    try:
        limit = target.limits.body_timeout_s
        await connection.send(
            b"POST /predict HTTP/1.1\r\nhost: attack\r\ncontent-length: 100000\r\n\r\n"
        )
        started = time.monotonic()
        while time.monotonic() - started < limit + CLOSE_SLACK_S + 1.0:
            if not await connection.send(b" "):
                break
            if await connection.closed_within(0.1) is not None:
                break
        else:
            return False, f"still open after {time.monotonic() - started:.1f} s of drip"
        elapsed = time.monotonic() - started
        return elapsed <= limit + CLOSE_SLACK_S, f"closed after {elapsed:.1f} s (limit {limit} s)"
    finally:
        connection.close()


@case(
    "idle-keep-alive",
    "an idle keep-alive connection",
    "closed by the idle timeout",
    concurrent=True,
)
async def idle_keep_alive(target: Target) -> tuple[bool, str]:
    connection = await Connection.open(target)
    try:
        await connection.send(request("GET", "/v2/health/live"))
        if await connection.response() is None:
            return False, "no answer to a health check"
        return await _held(connection, target.limits.keep_alive_s)
    finally:
        connection.close()


@case(
    "unread-answers",
    "pipelines 64-row requests, never reads",
    "stops reading, resets after the send timeout, memory flat",
)
async def unread_answers(target: Target) -> tuple[bool, str]:
    """Pipelines 64-row requests and never reads: memory must stay put, the connection must go."""
    one = request("POST", "/predict", predict_body(target, 64))
    sock = socket.create_connection((target.host, target.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.setblocking(False)
    limit = target.limits.send_timeout_s
    with RssSampler(target.pid) as rss:
        pending = b""
        stalled_at: float | None = None
        started = time.monotonic()
        reset = False
        while time.monotonic() - started < limit + 10.0:
            if not pending:
                pending = one * 8
            try:
                sent = sock.send(pending)
            except BlockingIOError:
                sent = 0
            except OSError:
                reset = True
                break
            pending = pending[sent:]
            if sent:
                stalled_at = None
            elif stalled_at is None:
                stalled_at = time.monotonic()
            elif time.monotonic() - stalled_at > limit + CLOSE_SLACK_S + 1.0:
                break
            await asyncio.sleep(0.005 if not sent else 0)
        held = time.monotonic() - stalled_at if stalled_at is not None else 0.0
    sock.close()
    growth = rss.peak_mb - rss.first_mb
    strict = reset and held <= limit + CLOSE_SLACK_S and growth < RSS_GROWTH_MB
    state = "reset" if reset else "still open"
    return strict, f"{state} {held:.1f} s after the client stalled; RSS +{growth:.0f} MB"


@case(
    "partial-bodies",
    "8 rounds of 50 connections leaving a 1 MB body unfinished",
    "memory returns after each round",
)
async def partial_bodies(target: Target) -> tuple[bool, str]:
    """Rounds of 50 connections that send most of a 1 MB body and vanish: nothing may stay.

    A leak grows with every round; the allocator keeping freed pages for reuse does not, so the
    verdict compares the settled memory after the second round with that after the last."""
    size = target.limits.max_body_bytes - 1024
    head = f"POST /predict HTTP/1.1\r\nhost: attack\r\ncontent-length: {size}\r\n\r\n".encode()
    part = b"1" * (size - 4096)
    settled = []
    with RssSampler(target.pid) as rss:
        for _ in range(8):
            connections = await asyncio.gather(*(Connection.open(target) for _ in range(50)))
            await asyncio.gather(*(c.send(head + part) for c in connections))
            for connection in connections:
                connection.close()
            settled.append(await _settled_rss(target.pid) - rss.first_mb)
    peak, growth = rss.peak_mb - rss.first_mb, settled[-1] - settled[1]
    strict = growth < RSS_GROWTH_MB / 4 and peak < RSS_GROWTH_MB * 2
    return strict, (
        f"RSS +{peak:.0f} MB at peak; settled +{settled[1]:.0f} MB after round 2, "
        f"+{settled[-1]:.0f} MB after round 8"
    )


async def _settled_rss(pid: int) -> float:
    """Resident MB once the server has dealt with what was sent (two equal samples 200 ms apart)."""
    previous = -1.0
    for _ in range(25):
        now = resident_mb(pid)
        if abs(now - previous) < 1.0:
            return now
        previous = now
        await asyncio.sleep(0.2)
    return previous


@case(
    "huge-header",
    "a 16 MB header",
    "431 with a JSON reason, memory flat",
)
async def huge_header(target: Target) -> tuple[bool, str]:
    """A 16 MB header value, sent in 64 KB pieces while the server keeps reading."""
    connection = await Connection.open(target)
    with RssSampler(target.pid) as rss:
        try:
            await connection.send(b"GET /v2/health/live HTTP/1.1\r\nhost: attack\r\nx-big: ")
            piece = b"a" * 65536
            sent = 0
            while sent < 16 << 20:
                if not await connection.send(piece):
                    break
                sent += len(piece)
                if len(connection.buffer) or await connection.closed_within(0) is not None:
                    break
            await connection.send(b"\r\n\r\n")
            answer = await connection.response(10.0)
        finally:
            connection.close()
    growth = rss.peak_mb - rss.first_mb
    if answer is None:
        return False, f"no answer after {sent >> 10} KiB; RSS +{growth:.0f} MB"
    strict = answer.status == 431 and answer.json_reason and growth < RSS_GROWTH_MB
    return strict, f"{answer.describe()} after {sent >> 10} KiB; RSS +{growth:.0f} MB"


@case(
    "huge-trailer",
    "a chunked body ending in a 16 MB trailer",
    "431 with a JSON reason, memory flat",
)
async def huge_trailer(target: Target) -> tuple[bool, str]:
    """Trailers are headers after the body: the same limit must hold for them."""
    connection = await Connection.open(target)
    with RssSampler(target.pid) as rss:
        try:
            await connection.send(
                b"POST /predict HTTP/1.1\r\nhost: attack\r\ntransfer-encoding: chunked\r\n\r\n"
                b"2\r\n{}\r\n0\r\nx-big: "
            )
            piece = b"a" * 65536
            sent = 0
            while sent < 16 << 20:
                if not await connection.send(piece):
                    break
                sent += len(piece)
                if len(connection.buffer) or await connection.closed_within(0) is not None:
                    break
            await connection.send(b"\r\n\r\n")
            answer = await connection.response(10.0)
        finally:
            connection.close()
    growth = rss.peak_mb - rss.first_mb
    if answer is None:
        return False, f"no answer after {sent >> 10} KiB; RSS +{growth:.0f} MB"
    strict = answer.status == 431 and answer.json_reason and growth < RSS_GROWTH_MB
    return strict, f"{answer.describe()} after {sent >> 10} KiB; RSS +{growth:.0f} MB"


@case(
    "many-headers",
    "500 headers",
    "431 with a JSON reason",
)
async def many_headers(target: Target) -> tuple[bool, str]:
    headers = {f"x-h{i}": "1" for i in range(500)}
    return await _refused_with_json(target, request("GET", "/v2/health/live", headers=headers))


@case(
    "long-url",
    "a 100 KB URL",
    "414 with a JSON reason",
)
async def long_url(target: Target) -> tuple[bool, str]:
    return await _refused_with_json(target, request("GET", "/v2/health/live?" + "a" * 100_000))


@case(
    "trailer-override",
    "a chunked trailer carrying another Authorization",
    "401: trailers never reach the application",
)
async def trailer_override(target: Target) -> tuple[bool, str]:
    """A wrong bearer token in the header, the right one in a chunked trailer: must stay 401."""
    body = target.reload_body
    raw = (
        b"POST /admin/reload HTTP/1.1\r\nhost: attack\r\ntransfer-encoding: chunked\r\n"
        b"authorization: Bearer wrong-token-wrong-token\r\ntrailer: authorization\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\nauthorization: Bearer "
        + target.admin_token.encode()
        + b"\r\n\r\n"
    )
    return await _refused_with_json(target, raw, (401, 400))


@case(
    "duplicate-authorization",
    "two Authorization headers",
    "refused (400/401)",
)
async def duplicate_authorization(target: Target) -> tuple[bool, str]:
    """Two Authorization headers (wrong, then right): which one a proxy checked is unknowable."""
    raw = (
        b"POST /admin/reload HTTP/1.1\r\nhost: attack\r\n"
        b"authorization: Bearer wrong-token-wrong-token\r\n"
        b"authorization: Bearer " + target.admin_token.encode() + b"\r\n"
        b"content-length: " + str(len(target.reload_body)).encode() + b"\r\n\r\n"
    ) + target.reload_body
    return await _refused_with_json(target, raw, (400, 401))


@case(
    "pipelined-early-refusal",
    "a refusal at the headers behind a pending answer",
    "200 then 413, in order",
)
async def pipelined_early_refusal(target: Target) -> tuple[bool, str]:
    """A valid request, then one refused at its headers, in one packet: both answers, in order."""
    too_large = target.limits.max_body_bytes + 1
    raw = request("POST", "/predict", predict_body(target)) + (
        f"POST /predict HTTP/1.1\r\nhost: attack\r\ncontent-length: {too_large}\r\n\r\n".encode()
    )
    connection = await Connection.open(target)
    try:
        await connection.send(raw)
        first = await connection.response()
        second = await connection.response()
    finally:
        connection.close()
    got = [r.describe() for r in (first, second) if r is not None]
    strict = (
        first is not None
        and second is not None
        and first.status == 200
        and second.status == 413
        and second.json_reason
    )
    return strict, " then ".join(got) or "no answer"


@case(
    "pipelined-continue",
    "Expect: 100-continue behind a pending answer",
    "200, then 100 Continue, then 200",
)
async def pipelined_continue(target: Target) -> tuple[bool, str]:
    """``100 Continue`` for a second request must not overtake the first one's answer."""
    body = predict_body(target)
    raw = (
        request("POST", "/predict", body)
        + (
            f"POST /predict HTTP/1.1\r\nhost: attack\r\ncontent-length: {len(body)}\r\n"
            "expect: 100-continue\r\n\r\n"
        ).encode()
    )
    connection = await Connection.open(target)
    try:
        await connection.send(raw)
        first = await connection.response()
        second = await connection.response(2.0)
        if second is not None and second.status == 100:
            await connection.send(body)
            third = await connection.response()
        else:
            third = None
    finally:
        connection.close()
    order = [r.status for r in (first, second, third) if r is not None]
    return order == [200, 100, 200], f"statuses in order: {order}"


@case(
    "absolute-form",
    "GET http://host/path (RFC 9112 3.2.2)",
    "answered like /path",
)
async def absolute_form(target: Target) -> tuple[bool, str]:
    connection = await Connection.open(target)
    try:
        await connection.send(request("GET", f"http://{target.host}/v2/health/ready"))
        answer = await connection.response()
    finally:
        connection.close()
    if answer is None:
        return False, "no answer"
    return answer.status == 200, answer.describe()


@case(
    "http10-keep-alive",
    "HTTP/1.0 with Connection: keep-alive",
    "the reply says keep-alive and the connection stays",
)
async def http10_keep_alive(target: Target) -> tuple[bool, str]:
    connection = await Connection.open(target)
    try:
        one = b"GET /v2/health/live HTTP/1.0\r\nconnection: keep-alive\r\n\r\n"
        await connection.send(one)
        first = await connection.response()
        said = (first.header("connection") or "-") if first else "-"
        await connection.send(one)
        second = await connection.response(2.0)
    finally:
        connection.close()
    strict = first is not None and said.lower() == "keep-alive" and second is not None
    return strict, f"connection: {said}; second request {'answered' if second else 'lost'}"


@case(
    "oversized-body-sent-whole",
    "a 16 MB body written before reading",
    "the client reads its 413 (no broken pipe)",
)
async def oversized_body_sent_whole(target: Target) -> tuple[bool, str]:
    """A client that writes its whole (too large) body before reading must still see the 413."""
    size = 16 * target.limits.max_body_bytes  # more than loopback's socket buffers hold
    raw = request("POST", "/predict", b"1" * size)
    connection = await Connection.open(target)
    try:
        delivered = await connection.send(raw)
        answer = await connection.response()
    finally:
        connection.close()
    if answer is None:
        return False, f"no 413 ({'sent' if delivered else 'broken pipe while sending'})"
    return answer.status == 413 and answer.json_reason, answer.describe()


def _infer(target: Target, shape: object, data: object) -> bytes:
    tensor = {"name": "input", "datatype": "FP32", "shape": shape, "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


@case(
    "huge-shape",
    "a v2 shape of 30,000 dimensions of 2^62",
    "400/413 at once",
)
async def huge_shape(target: Target) -> tuple[bool, str]:
    """Tens of thousands of huge dimensions: a product nobody should compute."""
    body = _infer(target, [2**62] * 30_000, [1.0])
    path = f"/v2/models/{target.model_name}/infer"
    return await _refused_with_json(target, request("POST", path, body), timeout=30, within=1.0)


@case(
    "deep-shape",
    "a v2 shape of 3,400 dimensions (6.8 KB)",
    "400, not a 500",
)
async def deep_shape(target: Target) -> tuple[bool, str]:
    """A 6.8 KB body whose shape has more dimensions than numpy allows."""
    body = _infer(target, [1] * 3400, [1.0])
    path = f"/v2/models/{target.model_name}/infer"
    return await _refused_with_json(target, request("POST", path, body))


@case(
    "deep-json",
    "100,000 nested arrays",
    "400 with a JSON reason",
)
async def deep_json(target: Target) -> tuple[bool, str]:
    body = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return await _refused_with_json(target, request("POST", "/predict", body))


def _raw_case(
    raw: bytes, statuses: tuple[int, ...] = ()
) -> Callable[[Target], Awaitable[tuple[bool, str]]]:
    async def run(target: Target) -> tuple[bool, str]:
        return await _refused_with_json(target, raw, statuses)

    return run


_SMUGGLED = b"GET /v2/health/live HTTP/1.1\r\nhost: attack\r\n\r\n"

_RAW_CASES: list[tuple[str, str, bytes, tuple[int, ...]]] = [
    (
        "cl-and-te",
        "request smuggling: Content-Length and Transfer-Encoding together",
        b"POST /predict HTTP/1.1\r\nhost: attack\r\ncontent-length: 4\r\n"
        b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n" + _SMUGGLED,
        (400,),
    ),
    (
        "duplicate-content-length",
        "request smuggling: two different Content-Length values",
        b"POST /predict HTTP/1.1\r\nhost: attack\r\ncontent-length: 3\r\ncontent-length: 50\r\n\r\n"
        + _SMUGGLED,
        (400,),
    ),
    (
        "te-not-chunked",
        "request smuggling: a transfer coding that is not chunked",
        b"POST /predict HTTP/1.1\r\nhost: attack\r\ntransfer-encoding: xchunked\r\n\r\n0\r\n\r\n"
        + _SMUGGLED,
        (400, 501),
    ),
    (
        "space-before-colon",
        "request smuggling: 'Transfer-Encoding : chunked' read differently by a proxy",
        b"POST /predict HTTP/1.1\r\nhost: attack\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n"
        + _SMUGGLED,
        (400,),
    ),
    (
        "obs-fold",
        "request smuggling: a header continued on the next line (obsolete line folding)",
        b"POST /predict HTTP/1.1\r\nhost: attack\r\nx-a: 1\r\n transfer-encoding: chunked\r\n"
        b"content-length: 0\r\n\r\n" + _SMUGGLED,
        (400,),
    ),
    (
        "chunk-size-overflow",
        "request smuggling: a chunk size that overflows 64 bits",
        b"POST /predict HTTP/1.1\r\nhost: attack\r\ntransfer-encoding: chunked\r\n\r\n"
        b"10000000000000000000001\r\nx\r\n0\r\n\r\n",
        (400, 413),
    ),
    (
        "bare-lf",
        "request smuggling: lines ended by LF alone",
        b"GET /v2/health/live HTTP/1.1\nhost: attack\n\n",
        (400,),
    ),
    (
        "nul-in-header",
        "header injection: a NUL byte inside a header value",
        b"GET /v2/health/live HTTP/1.1\r\nhost: attack\r\nx-a: a\x00b\r\n\r\n",
        (400,),
    ),
    (
        "negative-content-length",
        "framing: a negative Content-Length",
        b"POST /predict HTTP/1.1\r\nhost: attack\r\ncontent-length: -1\r\n\r\n",
        (400,),
    ),
    (
        "plus-content-length",
        "framing: Content-Length '+5', which some parsers read as 5",
        b"POST /predict HTTP/1.1\r\nhost: attack\r\ncontent-length: +5\r\n\r\nhello",
        (400,),
    ),
    (
        "missing-host",
        "HTTP/1.1 without Host (RFC 9112 3.2: must be refused)",
        b"GET /v2/health/live HTTP/1.1\r\n\r\n",
        (400,),
    ),
    (
        "duplicate-host",
        "two Host headers: routing and the application may disagree",
        b"GET /v2/health/live HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        (400,),
    ),
    (
        "unknown-method",
        "a method nobody speaks",
        b"BREW /v2/health/live HTTP/1.1\r\nhost: attack\r\n\r\n",
        (400, 405),
    ),
    (
        "garbage",
        "bytes that are not HTTP",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
        (400,),
    ),
]


for _name, _threat, _raw, _codes in _RAW_CASES:
    case(_name, _threat, "4xx with a JSON reason; the rest is not read")(_raw_case(_raw, _codes))


@case(
    "connection-flood",
    "more connections than MAX_CONNECTIONS",
    "503 with a reason beyond the limit; health still answered",
)
async def connection_flood(target: Target) -> tuple[bool, str]:
    """Every connection the server allows, then more: the extra ones get a 503 with a reason,
    and a health check still gets through (a liveness probe must not turn a flood into a restart).
    """
    limits = target.limits
    held = await asyncio.gather(*(Connection.open(target) for _ in range(limits.max_connections)))
    try:
        # each held connection starts a request, so none of them is idle
        await asyncio.gather(*(c.send(b"GET /v2/health/live HTTP/1.1\r\n") for c in held))
        extra = [await Connection.open(target) for _ in range(8)]
        body = predict_body(target)
        await asyncio.gather(*(c.send(request("POST", "/predict", body)) for c in extra))
        answers = await asyncio.gather(*(c.response(2.0) for c in extra))
        for connection in extra:
            connection.close()
        probe = await Connection.open(target)
        started = time.monotonic()
        await probe.send(request("GET", "/v2/health/ready"))
        health = await probe.response(2.0)
        health_ms = (time.monotonic() - started) * 1000
        probe.close()
    finally:
        for connection in held:
            connection.close()
    refused = sum(1 for a in answers if a is not None and a.status == 503 and a.json_reason)
    health_ok = health is not None and health.status == 200
    described = sorted({a.describe() if a else "no answer" for a in answers})
    observed = (
        f"extra connections: {refused}/8 JSON 503 ({', '.join(described)}); "
        f"health {'200' if health_ok else 'failed'} in {health_ms:.0f} ms"
    )
    return refused == 8 and health_ok, observed


async def run_cases(target: Target, cases: list[Case] | None = None) -> list[Outcome]:
    """Timing cases side by side, then the others one by one, in corpus order."""
    chosen = CASES if cases is None else cases
    together = [c for c in chosen if c.concurrent]
    results: dict[str, Outcome] = {}
    verdicts = await asyncio.gather(*(_run_one(target, c) for c in together))
    results.update({o.case: o for o in verdicts})
    for case in chosen:
        if not case.concurrent:
            results[case.name] = await _run_one(target, case)
    return [results[c.name] for c in chosen]


async def _run_one(target: Target, case: Case) -> Outcome:
    try:
        strict, observed = await case.run(target)
    except (ConnectionError, OSError) as exc:
        strict, observed = False, f"connection failed: {exc.__class__.__name__}"
    return Outcome(case.name, strict, observed)


# -- memory of the server under attack ----------------------------------------------------------


def resident_mb(pid: int) -> float:
    import psutil

    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return float("nan")


@dataclass
class RssSampler:
    """Samples a process's resident memory every 20 ms in a thread; ``peak_mb`` over the block."""

    pid: int
    first_mb: float = 0.0
    peak_mb: float = 0.0
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self.first_mb = self.peak_mb = resident_mb(self.pid)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            value = resident_mb(self.pid)
            self.samples.append(value)
            self.peak_mb = max(self.peak_mb, value)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, resident_mb(self.pid))


@dataclass
class HealthProbe:
    """Asks ``/v2/health/ready`` on a fresh connection every 100 ms in a thread (like a kubelet)."""

    host: str
    port: int
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @contextmanager
    def running(self) -> Iterator[HealthProbe]:
        thread = threading.Thread(target=self._probe, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def _probe(self) -> None:
        raw = b"GET /v2/health/ready HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n"
        while not self._stop.wait(0.1):
            started = time.perf_counter()
            try:
                with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
                    sock.sendall(raw)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        data += chunk
            except OSError as exc:
                self.failures.append(exc.__class__.__name__)
                continue
            if not data.startswith(b"HTTP/1.1 200"):
                self.failures.append(_first_line(data) or "closed")
                continue
            self.latencies_ms.append((time.perf_counter() - started) * 1000)

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ms, default=float("nan"))
