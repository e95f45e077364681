"""A purpose-built HTTP/1.1 server for the service: the httptools parser on an asyncio protocol.

Why not uvicorn for the hot path: measured on the 2-core build machine, uvicorn's ASGI cycle (a
task per request, message dicts, header normalisation) costs ~23 us per request; the model needs
~15-20 us; a bare ASGI app under uvicorn tops out near 35k req/s while a protocol on the same
parser answers 180k. Here the parser's completion callback calls ``ModelService.dispatch``
directly: no task, no ASGI messages. Inference answers arrive at the end of the loop turn (one
merged onnxruntime call, ``batching.py``) through a callback; a reload or injected latency runs as
a task.

Implemented: keep-alive, pipelining (answers strictly in request order, refusals and ``100
Continue`` included), Content-Length and chunked bodies (trailers are read and dropped: they never
reach the application), ``Expect: 100-continue``, HEAD, ``Connection: close``, HTTP/1.0 keep-alive,
absolute-form request targets, and a graceful drain. Against hostile clients (every limit is
configuration, ``ServingConfig``; ml/serving/README.md names the threat each answers): header
bytes, count and URL length; a header timeout from a request's first byte, a body timeout with a
minimum rate, an idle timeout, a send timeout for clients that do not read their answers; write
back-pressure (a connection whose answers are not read is not read either); a cap on connections
(beyond it one request is answered, health checks normally and everything else 503) and on request
bytes held over all connections; refusals close by a lingering close, so a client still writing
its body reads the refusal instead of a reset. Not implemented, on purpose: TLS, HTTP/2, upgrades
(the pod sits behind a Service or mesh that terminates those). ``HTTP_SERVER=uvicorn`` or
``granian`` serves the same application through a standard server instead.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol, cast
from urllib.parse import unquote

import httptools

from ml.serving.app import Answer, BodyLimit, Headers, Reply, error_reply
from ml.serving.batching import Deferred
from ml.serving.config import ServingConfig

log = logging.getLogger("ml.serving")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode("latin-1") for s in HTTPStatus}
# Pipelined requests read ahead of their answers; beyond this many the connection stops being read
_PIPELINE_DEPTH = 16
# A lingering close (after a refusal or a Connection: close answer) reads and drops what the client
# still sends, until it closes, falls silent this long, or _LINGER_MAX_S have passed
_LINGER_IDLE_S = 1.0
_LINGER_MAX_S = 5.0
# On SIGTERM a connection idle this long is closed; one that sends a request first gets its answer
# (with Connection: close): a client mid-way between two requests loses nothing
_DRAIN_IDLE_S = 1.0
# Connections over MAX_CONNECTIONS still get one answer (health checks pass, the rest get 503);
# beyond this many more they are closed unanswered
_OVERFLOW_SLOTS = 64
_HEALTH_PATHS = frozenset(("/v2/health/live", "/v2/health/ready"))
# Bytes of chunk framing allowed per chunk (size line and CRLFs) before it counts as header bytes
_CHUNK_FRAMING = 32
# How often timeouts are checked: a connection outlives its timeout by at most this much
_SWEEP_S = 0.25


class Service(Protocol):
    """What the server needs of the application: ``ModelService`` (or, in the benchmark, a
    constant answer measuring this layer's own ceiling)."""

    config: ServingConfig
    body_limit: BodyLimit  # the app's rule for body size: asked before and while reading

    def dispatch(self, method: str, path: str, headers: Headers, body: bytes) -> Answer: ...

    def log_startup(self) -> None: ...

    def log_shutdown(self) -> None: ...


class _Request:
    __slots__ = ("method", "url", "headers", "body", "keep_alive", "http10", "refusal")

    def __init__(
        self,
        method: str,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        http10: bool,
        refusal: Reply | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http10 = http10
        self.refusal = refusal  # answered with this, then the connection closes


def _refusal(status: int, message: str) -> _Request:
    return _Request("GET", b"", [], b"", False, False, error_reply(status, message))


class _Connection(asyncio.Protocol):
    """One client connection: parse, dispatch, write answers in request order.

    A request's body bytes count against the server-wide ``max_buffered_bytes`` from the moment
    they are read until its answer is written (or the connection is lost).
    """

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.config
        self.service = server.service
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.overflow = False  # over MAX_CONNECTIONS: one answer, then close
        # the limits read for every request, as plain attributes
        self._max_header_bytes = self.limits.max_header_bytes
        self._max_headers = self.limits.max_headers
        self._header_timeout_s = self.limits.header_timeout_s
        self._body_timeout_s = self.limits.body_timeout_s
        self._keep_alive_s = self.limits.keep_alive_s
        self._body_limit = self.service.body_limit
        self._http10 = False
        # the request being parsed
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0  # request line + headers (+ trailers) of this request
        # bytes fed since this request began (not counting the read it began in) and its chunks:
        # what is neither body nor chunk framing is headers or trailers, which the parser
        # buffers itself while a field is unfinished
        self._fed = 0
        self._chunks = 0
        self._headers_done = False
        self._body: list[bytes] = []
        self._size = 0
        self._body_started = 0.0
        self._continue_owed = False
        self._parsing = False  # a request has begun and is not complete
        # answers
        self._pending: Deferred[Reply] | asyncio.Task[Reply] | None = None
        self._queue: deque[tuple[_Request, int]] = deque()  # with the body bytes each holds
        self._head_size = 0  # body bytes of the request whose answer is pending
        self._held = 0  # body bytes this connection holds against the server-wide budget
        self._closing = False  # no more requests: close after the answers owed
        self._lingering = False
        self._linger_until = 0.0
        self._linger_end = 0.0
        # timers (loop time); None: nothing the client owes
        self.deadline: float | None = None
        self._expiry = ""  # which timeout ``deadline`` is
        self._write_paused_at: float | None = None
        self._reading = True

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        server = self.server
        if len(server.connections) >= server.config.max_connections:
            if server.overflowing >= _OVERFLOW_SLOTS:
                self.transport.abort()
                return
            self.overflow = True
            server.overflowing += 1
        server.connections.add(self)
        # a fresh connection must send its first request's headers within the header timeout
        self._expire_in(self.limits.header_timeout_s, "silent")

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self in server.connections:
            server.connections.discard(self)
            if self.overflow:
                server.overflowing -= 1
        server.buffered -= self._held
        self._held = 0
        # break the parser <-> connection cycle and drop buffers now, not at the next full GC
        self.parser = None
        self.transport = None
        self._body = []
        self._headers = []
        self._queue.clear()
        # a pending answer (a reload, say) still runs to its end; its reply is simply dropped

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._linger_until = min(self.server.now() + _LINGER_IDLE_S, self._linger_end)
            return
        parser = self.parser
        if parser is None or self._closing:
            return
        self._fed += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # the request itself was answered as HTTP/1.1; what follows would be another
            # protocol, which this server does not speak: answer what was read, then close
            self._stop_reading_requests()
            if not self._busy_answering():
                self._linger()
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")
            return
        if (
            self._parsing
            and self._fed - self._size > self._max_header_bytes + _CHUNK_FRAMING * self._chunks
        ):
            # an unfinished header or trailer the parser keeps concatenating: cut it off
            self._refuse(431, self._header_limit_message())

    def eof_received(self) -> bool:
        """The client has sent everything: answer what it asked, then close."""
        if self._parsing and not self._lingering:
            self._refuse(400, "the connection ended in the middle of a request")
        self._stop_reading_requests()
        return self._busy_answering()  # keep the transport open for the answers owed

    def pause_writing(self) -> None:  # the client is not reading its answers: stop reading
        self._write_paused_at = self.server.now()
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused_at = None
        self._resume_reading()

    # -- httptools callbacks --------------------------------------------------------------------

    # every callback returns at once after a refusal: the parser still runs over the rest of the
    # chunk it was given, but nothing after a refused request is used

    def on_message_begin(self) -> None:
        if self._closing:
            return
        self._fed = 0
        self._chunks = 0
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._headers_done = False
        self._body = []
        self._size = 0
        self._continue_owed = False
        self._parsing = True
        # (inlined _expire_in: this runs for every request)
        self.deadline = self.server._now + self._header_timeout_s
        self._expiry = "header"

    def on_url(self, url: bytes) -> None:
        if self._closing:
            return
        self._url += url
        self._header_bytes += len(url)
        if len(self._url) > self.limits.max_url_bytes:
            self._refuse(414, f"URL longer than MAX_URL_BYTES={self.limits.max_url_bytes}")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._closing:
            return
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._max_header_bytes:
            self._refuse(431, self._header_limit_message())
        elif not self._headers_done:  # after the headers, these are trailers: never used
            self._headers.append((name.lower(), value))
            if len(self._headers) > self._max_headers:
                self._refuse(431, f"more than MAX_HEADERS={self._max_headers} headers")

    def _header_limit_message(self) -> str:
        return f"request headers or trailers exceed MAX_HEADER_BYTES={self._max_header_bytes}"

    def on_headers_complete(self) -> None:
        if self._closing:
            return
        self._headers_done = True
        hosts = 0
        expect_continue = False
        for key, value in self._headers:
            if key == b"host":
                hosts += 1
            elif key == b"content-length":
                # refused before a byte of the body is read (llhttp has checked the digits)
                error = self._body_limit.check_declared(value)
                if error is not None:
                    self._refuse(error.status, error.message)
                    return
            elif key == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        parser: httptools.HttpRequestParser = self.parser  # type: ignore[assignment]  # feeding
        self._http10 = parser.get_http_version() == "1.0"
        if hosts != 1 and (hosts > 1 or not self._http10):
            self._refuse(400, "an HTTP/1.1 request needs exactly one Host header")
            return
        if self.overflow and self._url.partition(b"?")[0] not in _HEALTH_PATHS_BYTES:
            self._refuse(503, "server busy: too many connections; retry later")
            return
        self._body_started = now = self.server._now
        self.deadline = now + self._body_timeout_s
        self._expiry = "body"
        if expect_continue:
            if self._pending is None and not self._queue:
                self._write_raw(_CONTINUE)
            else:  # an earlier answer is owed first; the body clock starts with the invitation
                self._continue_owed = True
                self.deadline = None

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, chunk: bytes) -> None:
        if self._closing:
            return
        size = len(chunk)
        self._size += size
        error = self._body_limit.check_received(self._size)
        if error is not None:
            self._refuse(error.status, error.message)
            return
        self._held += size
        server = self.server
        server.buffered += size
        if server.buffered > self.limits.max_buffered_bytes:
            self._refuse(503, "server busy: too many request bytes in flight; retry later")
            return
        self._body.append(chunk)
        self._continue_owed = False  # the client did not wait for the invitation
        # the body must keep up with the minimum rate once its grace period is over
        self.deadline = (
            self._body_started + self.limits.body_timeout_s + self._size / self.limits.body_min_rate
        )

    def on_message_complete(self) -> None:
        if self._closing:
            return
        parser: httptools.HttpRequestParser = self.parser  # type: ignore[assignment]  # feeding
        self._parsing = False
        self.deadline = None  # the server's turn
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        request = _Request(
            parser.get_method().decode("ascii", "replace"),
            self._url,
            self._headers,
            body,
            parser.should_keep_alive() and not self.overflow,
            self._http10,
        )
        size, self._size = self._size, 0
        if self._pending is not None or self._queue:
            self._queue.append((request, size))
            if len(self._queue) >= _PIPELINE_DEPTH:  # a deep pipeline behind a slow answer
                self._pause_reading()
        else:
            self._handle(request, size)

    # -- answering ------------------------------------------------------------------------------

    def _busy_answering(self) -> bool:
        return self._pending is not None or bool(self._queue)

    def _handle(self, request: _Request, size: int) -> None:
        if request.refusal is not None:
            self._write(request, request.refusal, size)
            return
        url = request.url
        if url[:1] != b"/":  # absolute form (http://host/path): the path is what routes
            try:
                url = httptools.parse_url(url).path or b"/"
            except httptools.HttpParserInvalidURLError:
                pass
        path = url.partition(b"?")[0].decode("latin-1")
        if "%" in path:
            path = unquote(path)
        answer = self.service.dispatch(request.method, path, request.headers, request.body)
        if isinstance(answer, Reply):
            self._write(request, answer, size)
        elif isinstance(answer, Deferred):  # inference: answered by this loop turn's merged call
            self._pending = answer
            self._head_size = size
            answer.on_result(lambda reply: self._finish_pending(request, reply))
        else:
            task = asyncio.ensure_future(answer)
            self._pending = task
            self._head_size = size
            task.add_done_callback(lambda done: self._finish_task(request, done))

    def _finish_task(self, request: _Request, task: asyncio.Task[Reply]) -> None:
        if task.cancelled():  # the loop is shutting down
            self._pending = None
            return
        error = task.exception()
        if error is not None:
            log.error("request failed", exc_info=error)
            self._finish_pending(request, error_reply(500, "internal error"))
        else:
            self._finish_pending(request, task.result())

    def _finish_pending(self, request: _Request, reply: Reply) -> None:
        """Write a late answer, then the pipelined requests that waited behind it."""
        self._pending = None
        self._write(request, reply, self._head_size)
        while self._queue and self._pending is None and self.transport is not None:
            queued, size = self._queue.popleft()
            self._handle(queued, size)
        if self._pending is None and not self._queue:
            if self._continue_owed and self.transport is not None:
                self._continue_owed = False
                self._write_raw(_CONTINUE)
                self._body_started = self.server.now()
                self._expire_in(self.limits.body_timeout_s, "body")
            self._resume_reading()

    def _write(self, request: _Request, reply: Reply, size: int) -> None:
        if size:
            self._held -= size
            self.server.buffered -= size
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        server = self.server
        # whether anything else is owed on this connection after this answer
        more = bool(self._queue) or self._parsing
        # closing (a refusal queued, EOF, SIGTERM): the last answer owed carries Connection: close
        keep_alive = (
            request.keep_alive
            and request.refusal is None
            and (more or not (self._closing or server.draining))
        )
        head = [
            _STATUS_LINES.get(reply.status) or f"HTTP/1.1 {reply.status} \r\n".encode(),
            b"content-type: ",
            reply.content_type,
            b"\r\ncontent-length: ",
            str(len(reply.body)).encode(),
            b"\r\ndate: ",
            server.date(),
            b"\r\n",
        ]
        if reply.headers:
            head.append(reply.headers)
        if not keep_alive:
            head.append(b"connection: close\r\n")
        elif request.http10:
            head.append(b"connection: keep-alive\r\n")
        head.append(b"\r\n")
        if request.method != "HEAD":
            head.append(reply.body)
        transport.write(b"".join(head))
        if not keep_alive:
            self._linger()
        elif not more and self._pending is None:
            # (inlined _expire_in: this runs for every answer)
            self.deadline = server._now + (
                server.drain_idle_s if server.draining else self._keep_alive_s
            )
            self._expiry = "idle"

    def _write_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _refuse(self, status: int, message: str) -> None:
        """Answer an unusable request (after the answers owed before it) and close: the rest of
        the stream is not trusted."""
        if self._lingering or self._closing:
            return
        self._parsing = False
        size, self._size = self._size, 0
        self._body = []
        refusal = _refusal(status, message)
        self._stop_reading_requests()
        if self._busy_answering():
            self._queue.append((refusal, size))
        else:
            self._write(refusal, cast(Reply, refusal.refusal), size)

    def _stop_reading_requests(self) -> None:
        """No request after this one is parsed; the connection closes once its answers are out."""
        self._closing = True
        self.deadline = None
        if self._busy_answering():
            self._pause_reading()  # keep what follows in the kernel until the answers are out

    def _linger(self) -> None:
        """Close after the last answer without a reset: stop sending, drop what still arrives."""
        transport = self.transport
        if transport is None:
            return
        self._closing = True
        self._lingering = True
        self.deadline = None
        self._queue.clear()
        now = self.server.now()
        self._linger_until = now + _LINGER_IDLE_S
        self._linger_end = now + _LINGER_MAX_S
        try:
            transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            transport.close()
            return
        self._resume_reading(force=True)

    # -- timers, flow control, shutdown ---------------------------------------------------------

    def _expire_in(self, seconds: float, kind: str) -> None:
        self.deadline = self.server.now() + seconds
        self._expiry = kind

    def check_timers(self, now: float) -> None:
        """Called by the server's sweep: enforce whichever timeout applies now."""
        transport = self.transport
        if transport is None:
            return
        if self._write_paused_at is not None:
            if now - self._write_paused_at > self.limits.send_timeout_s:
                transport.abort()  # it reads nothing: a polite answer would never arrive
            return
        if self._lingering:
            if now >= self._linger_until:
                transport.close()
            return
        deadline = self.deadline
        if deadline is None or now < deadline or not self._reading:
            return
        kind = self._expiry
        if kind in ("silent", "idle"):
            transport.close()
        elif kind == "header":
            self._timed_out(
                f"request headers not received within HEADER_TIMEOUT_S="
                f"{self.limits.header_timeout_s:g}"
            )
        else:
            self._timed_out(
                f"request body slower than BODY_MIN_RATE={self.limits.body_min_rate} bytes/s "
                f"after BODY_TIMEOUT_S={self.limits.body_timeout_s:g}"
            )

    def _timed_out(self, message: str) -> None:
        # a 408 says why, then close at once: this client is slow by definition, no lingering
        self._refuse(408, message)
        if self.transport is not None and not self._busy_answering():
            self.transport.close()

    def _pause_reading(self) -> None:
        if self._reading and self.transport is not None:
            self._reading = False
            self.transport.pause_reading()

    def _resume_reading(self, force: bool = False) -> None:
        """Read again unless the client leaves its answers unread or a pipeline waits."""
        transport = self.transport
        if self._reading or transport is None or transport.is_closing():
            return
        if not force and (
            self._write_paused_at is not None
            or len(self._queue) >= _PIPELINE_DEPTH
            or (self._closing and self._busy_answering())
        ):
            return
        self._reading = True
        transport.resume_reading()

    def drain(self) -> None:
        """SIGTERM: finish what was read; an idle connection closes if it stays idle a moment."""
        if not self._parsing and not self._busy_answering() and not self._lingering:
            self._expire_in(self.server.drain_idle_s, "idle")

    @property
    def busy(self) -> bool:
        return self._parsing or self._busy_answering()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


_HEALTH_PATHS_BYTES = frozenset(p.encode() for p in _HEALTH_PATHS)


class HttpServer:
    """``run()`` blocks until SIGTERM/SIGINT (or ``should_exit``), then drains and returns."""

    def __init__(
        self, service: Service, config: ServingConfig | None = None, backlog: int = 2048
    ) -> None:
        self.service = service
        self.config = config or service.config
        self.host = self.config.host
        self.port = self.config.port
        self.backlog = backlog
        self.connections: set[_Connection] = set()
        self.overflowing = 0  # connections over MAX_CONNECTIONS, getting their one answer
        self.buffered = 0  # request body bytes held over all connections
        self.started = False
        self.should_exit = False
        self.draining = False
        self._date_second = -1
        self._date = b""
        self._now = 0.0  # the loop clock, refreshed every 50 ms: precise enough for timeouts
        # idle connections close this long after SIGTERM (well inside the graceful timeout)
        self.drain_idle_s = min(_DRAIN_IDLE_S, self.config.graceful_timeout_s / 2)

    def now(self) -> float:
        return self._now

    def date(self) -> bytes:
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date = formatdate(second, usegmt=True).encode()
        return self._date

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio still works
            asyncio.run(self.serve(sockets))
        else:
            uvloop.run(self.serve(sockets))

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._now = loop.time()
        if threading.current_thread() is threading.main_thread():
            for stop in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(stop, self._request_exit, stop)
        if sockets:
            listeners = [
                await loop.create_server(lambda: _Connection(self), sock=s, backlog=self.backlog)
                for s in sockets
            ]
        else:
            listeners = [
                await loop.create_server(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    backlog=self.backlog,
                    reuse_address=True,
                )
            ]
        bound = [s.getsockname() for server in listeners for s in server.sockets]
        log.info("listening", extra={"addresses": [f"{a[0]}:{a[1]}" for a in bound]})
        self.service.log_startup()
        self.started = True
        # one sweep over the connections instead of a timer per request (a timer handle per
        # answer costs ~1 us); the clock read per request is this cached one
        next_sweep = 0.0
        while not self.should_exit:
            self._now = loop.time()
            if self._now >= next_sweep:
                next_sweep = self._now + _SWEEP_S
                self._sweep()
            await asyncio.sleep(0.05)
        await self._drain(listeners)

    def _sweep(self) -> None:
        now = self._now
        for connection in list(self.connections):
            connection.check_timers(now)

    def _request_exit(self, signum: int) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        self.should_exit = True

    async def _drain(self, listeners: Sequence[asyncio.AbstractServer]) -> None:
        """Stop accepting; answer every request read (the last one on each connection with
        Connection: close); close idle connections; abort what is left after the timeout."""
        loop = asyncio.get_running_loop()
        for listener in listeners:
            listener.close()
        self.draining = True
        self._now = loop.time()
        for connection in list(self.connections):
            connection.drain()
        deadline = self._now + self.config.graceful_timeout_s
        while self.connections and self._now < deadline:
            await asyncio.sleep(0.02)
            self._now = loop.time()
            self._sweep()
        if self.connections:
            busy = sum(c.busy for c in self.connections)
            log.warning("graceful timeout: aborting connections", extra={"busy": busy})
            for connection in list(self.connections):
                connection.abort()
        for listener in listeners:
            await listener.wait_closed()
        self.service.log_shutdown()
