"""Process entry point: environment -> config -> model -> HTTP server (one process, no access log).

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT: stop accepting, drain in-flight requests),
2 for a configuration error, 3 when the model cannot be served. Each failure is one JSON log line
saying why, so a crash-looping pod explains itself in ``kubectl logs``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import logging.config
import os
import signal
import socket
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

import uvicorn

from ml.serving.app import ModelService
from ml.serving.config import LOG_LEVELS, ConfigError, ServingConfig
from ml.serving.http import HttpServer
from ml.serving.logs import log_config
from ml.serving.model import ModelError, load_model

log = logging.getLogger("ml.serving")


def build_server(config: ServingConfig) -> HttpServer | uvicorn.Server | GranianServer:
    """Load the model (fails fast, before the port opens) and put the app behind a server.

    Every server offers ``run(sockets=None)``, ``started`` and ``should_exit``.
    """
    model = load_model(
        config.model_uri,
        config.registration_path,
        name=config.model_name,
        intra_op_threads=config.intra_op_threads,
    )
    app = ModelService(model, config)
    if config.http_server == "builtin":
        return HttpServer(app, config)
    if config.http_server == "granian":
        return GranianServer(app, config)
    # uvicorn's closest equivalents of the limits; it has no header or body timeouts
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            loop="auto",  # uvloop when installed
            http="auto",  # httptools when installed
            lifespan="on",
            access_log=False,  # a log line per request would cost more than the model
            log_config=log_config(config.log_level),
            server_header=False,
            timeout_graceful_shutdown=max(1, round(config.graceful_timeout_s)),
            timeout_keep_alive=max(1, round(config.keep_alive_s)),
            limit_concurrency=config.max_connections,
            backlog=2048,
        )
    )


class GranianServer:
    """The application under granian's embedded server (one process, this event loop).

    granian brings its own HTTP stack (hyper, in Rust); its closest equivalents of the limits
    are set: the header read timeout, the header buffer and the concurrency cap (backpressure).
    It has no body timeout and no idle timeout of its own.
    """

    def __init__(self, app: ModelService, config: ServingConfig) -> None:
        self.app = app
        self.config = config
        self.started = False
        self.should_exit = False

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets:
            raise ValueError("granian binds its own socket: pass no sockets, set PORT")
        import uvloop

        uvloop.run(self.serve())

    async def serve(self) -> None:
        from granian.constants import HTTPModes, Interfaces
        from granian.http import HTTP1Settings
        from granian.server.embed import Server

        config = self.config
        server = Server(
            self.app,
            address=config.host,
            port=config.port,
            interface=Interfaces.ASGI,
            http=HTTPModes.http1,
            websockets=False,
            backlog=2048,
            backpressure=config.max_connections,
            http1_settings=HTTP1Settings(
                header_read_timeout=max(1, round(config.header_timeout_s * 1000)),
                keep_alive=True,
                max_buffer_size=max(8192 + 4096, config.max_header_bytes),
            ),
            log_dictconfig=log_config(config.log_level),
        )
        server.on_startup(self._mark_started)
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for stop in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(stop, server.stop)
        watcher = loop.create_task(self._watch(server))
        try:
            await server.serve()
        finally:
            watcher.cancel()

    def _mark_started(self) -> Any:
        self.started = True

    async def _watch(self, server: Any) -> None:
        """``should_exit`` set from another thread (tests) stops the server like a signal."""
        while not self.should_exit:
            await asyncio.sleep(0.05)
        server.stop()


def main(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    level = env.get("LOG_LEVEL", "info").strip().lower()
    logging.config.dictConfig(log_config(level if level in LOG_LEVELS else "info"))
    try:
        config = ServingConfig.from_env(env)
    except ConfigError as exc:
        log.error("invalid configuration", extra={"reason": str(exc)})
        return 2
    try:
        server = build_server(config)
    except ModelError as exc:
        log.error("model cannot be served", extra={"reason": str(exc)})
        return 3
    # Objects alive now (modules, the model) never die: keep the collector from rescanning them,
    # which otherwise shows up as multi-millisecond pauses in the latency tail.
    gc.collect()
    gc.freeze()
    # uvicorn drains, then re-raises the signal it caught; exit 0 instead of dying by SIGTERM,
    # so a clean shutdown looks clean (also for a signal that lands before uvicorn's handlers).
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _exit_cleanly)
    server.run()
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
