"""A purpose-built HTTP/1.1 server for the service: the httptools parser on an asyncio protocol.

Why not uvicorn for the hot path: measured on the 2-core build machine, uvicorn's ASGI cycle (a
task per request, message dicts, header normalisation) costs ~23 us per request; the model needs
~15-20 us; a bare ASGI app under uvicorn tops out near 35k req/s while a protocol on the same
parser answers 180k. Here the parser's completion callback calls ``ModelService.dispatch``
directly: no task, no ASGI messages. Inference answers arrive at the end of the loop turn (one
merged onnxruntime call, ``batching.py``) through a callback; a reload or injected latency runs as
a task. Later pipelined requests on a connection wait behind a late answer, so answers stay in
order.

Implemented: keep-alive with an idle timeout, pipelining, Content-Length and chunked request
bodies, ``Expect: 100-continue``, HEAD, ``Connection: close``, HTTP/1.0, limits on body size
(413), header count and URL length (431/414), write back-pressure (a client that does not read
its answers stops being read), and graceful shutdown (stop accepting, finish requests in flight,
close idle connections, then exit). Not implemented, on purpose: TLS, HTTP/2, upgrades (the pod
sits behind a Service or mesh that terminates those). ``HTTP_SERVER=uvicorn`` serves the same
application through uvicorn instead.
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
from typing import cast
from urllib.parse import unquote

import httptools

from ml.serving.app import ModelService, Reply, error_reply
from ml.serving.batching import Deferred
from ml.serving.codec import ClientError

log = logging.getLogger("ml.serving")

MAX_HEADERS = 100
MAX_URL_BYTES = 8192
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode("latin-1") for s in HTTPStatus}


class _Request:
    __slots__ = ("method", "url", "headers", "body", "keep_alive", "error")

    def __init__(
        self,
        method: str,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        error: ClientError | None,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.error = error


class _Connection(asyncio.Protocol):
    """One client connection: parse, dispatch, write answers in request order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.service = server.service
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._refused = False  # an early error answer was sent; ignore the rest, then close
        self._in_message = False  # a request has started and is not answered yet
        self._pending: Deferred[Reply] | asyncio.Task[Reply] | None = None  # a late answer
        self._queue: deque[_Request] = deque()  # pipelined requests behind the pending answer
        self.idle_since: float | None = None  # loop time the connection went idle; None: busy
        self._reading = True

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.connections.add(self)
        self.idle_since = self.server.now()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        # a pending answer (a reload, say) still runs to its end; its reply is simply dropped

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # the request itself was answered as HTTP/1.1; what follows would be another
            # protocol, which this server does not speak
            if self.transport is not None:
                self.transport.close()
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:  # the client is not reading its answers: stop reading
        self._pause_reading()

    def resume_writing(self) -> None:
        self._resume_reading()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._size = 0
        self._in_message = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL_BYTES:
            self._refuse(414, f"URL longer than {MAX_URL_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))
        if len(self._headers) > MAX_HEADERS:
            self._refuse(431, f"more than {MAX_HEADERS} headers")

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        expect_continue = False
        for key, value in self._headers:
            if key == b"content-length" and value.isdigit() and int(value) > self.server.max_body:
                self._refuse(413, f"body exceeds MAX_BODY_BYTES={self.server.max_body}")
                return
            if key == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        if expect_continue and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, chunk: bytes) -> None:
        if self._refused:
            return
        self._size += len(chunk)
        if self._size > self.server.max_body:  # chunked bodies have no Content-Length
            self._refuse(413, f"body exceeds MAX_BODY_BYTES={self.server.max_body}")
            return
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        request = _Request(
            self.parser.get_method().decode("ascii", "replace"),
            self._url,
            self._headers,
            b"".join(self._body),
            self.parser.should_keep_alive(),
            None,
        )
        if self._pending is not None:
            self._queue.append(request)
            if len(self._queue) >= 16:  # a deep pipeline behind a slow answer: stop reading
                self._pause_reading()
        else:
            self._handle(request)

    # -- answering ------------------------------------------------------------------------------

    def _handle(self, request: _Request) -> None:
        path = request.url.partition(b"?")[0].decode("latin-1")
        if "%" in path:
            path = unquote(path)
        answer = self.service.dispatch(
            request.method, path, request.headers, request.body, request.error
        )
        if isinstance(answer, Reply):
            self._write(request, answer)
        elif isinstance(answer, Deferred):  # inference: answered by this loop turn's merged call
            self._pending = answer
            answer.on_result(lambda reply: self._finish_pending(request, reply))
        else:
            task = asyncio.ensure_future(answer)
            self._pending = task
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
        self._write(request, reply)
        while self._queue and self._pending is None:
            self._handle(self._queue.popleft())
        if not self._queue:
            self._resume_reading()

    def _write(self, request: _Request, reply: Reply) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        keep_alive = request.keep_alive and not self.server.should_exit
        head = [
            _STATUS_LINES.get(reply.status) or f"HTTP/1.1 {reply.status} \r\n".encode(),
            b"content-type: ",
            reply.content_type,
            b"\r\ncontent-length: ",
            str(len(reply.body)).encode(),
            b"\r\ndate: ",
            self.server.date(),
            b"\r\n",
        ]
        if reply.status == 401:
            head.append(b"www-authenticate: Bearer\r\n")
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if request.method != "HEAD":
            head.append(reply.body)
        transport.write(b"".join(head))
        if not keep_alive:
            transport.close()
        elif self._pending is None and not self._queue:
            self._in_message = False
            self.idle_since = self.server.now()

    def _refuse(self, status: int, message: str) -> None:
        """Answer an unusable request at once and close: the rest of the stream is not trusted."""
        if self._refused or self.transport is None:
            return
        self._refused = True
        request = _Request("GET", b"", [], b"", False, None)
        self._queue.clear()
        self._write(request, error_reply(status, message))

    # -- timers, flow control, shutdown ---------------------------------------------------------

    def close_if_idle_since(self, deadline: float) -> None:
        """The keep-alive timeout, checked by the server's once-a-second sweep."""
        idle = self.idle_since
        if idle is not None and idle < deadline and not self._in_message and self._pending is None:
            if self.transport is not None:
                self.transport.close()

    def _pause_reading(self) -> None:
        if self._reading and self.transport is not None:
            self._reading = False
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self._reading and self.transport is not None and not self.transport.is_closing():
            self._reading = True
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """Close now if idle; otherwise the answer in progress carries Connection: close."""
        if not self._in_message and self._pending is None and self.transport is not None:
            self.transport.close()

    @property
    def busy(self) -> bool:
        return self._in_message or self._pending is not None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class HttpServer:
    """``run()`` blocks until SIGTERM/SIGINT (or ``should_exit``), then drains and returns."""

    def __init__(
        self,
        service: ModelService,
        host: str,
        port: int,
        graceful_timeout_s: float = 20.0,
        keep_alive_s: float = 75.0,
        backlog: int = 2048,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.graceful_timeout_s = graceful_timeout_s
        self.keep_alive_s = keep_alive_s
        self.backlog = backlog
        self.max_body = service.config.max_body_bytes
        self.connections: set[_Connection] = set()
        self.started = False
        self.should_exit = False
        self._date_second = -1
        self._date = b""
        self._now = 0.0  # the loop clock, refreshed by the sweep; precise enough for idling

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
        # one sweep instead of a timer per request: a timer handle per answer costs ~1 us
        sweep_every = min(1.0, self.keep_alive_s / 4)
        next_sweep = 0.0
        while not self.should_exit:
            self._now = loop.time()
            if self._now >= next_sweep:
                next_sweep = self._now + sweep_every
                deadline = self._now - self.keep_alive_s
                for connection in list(self.connections):
                    connection.close_if_idle_since(deadline)
            await asyncio.sleep(0.05)
        await self._drain(listeners)

    def _request_exit(self, signum: int) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        self.should_exit = True

    async def _drain(self, listeners: Sequence[asyncio.AbstractServer]) -> None:
        for listener in listeners:
            listener.close()
        for connection in list(self.connections):
            connection.shutdown()
        deadline = time.monotonic() + self.graceful_timeout_s
        while self.connections and time.monotonic() < deadline:
            for connection in list(self.connections):
                connection.shutdown()
            await asyncio.sleep(0.01)
        if self.connections:
            busy = sum(c.busy for c in self.connections)
            log.warning("graceful timeout: aborting connections", extra={"busy": busy})
            for connection in list(self.connections):
                connection.abort()
        for listener in listeners:
            await listener.wait_closed()
        self.service.log_shutdown()
