"""Process entry point: environment -> config -> model -> HTTP server (one process, no access log).

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT: stop accepting, drain in-flight requests),
2 for a configuration error, 3 when the model cannot be served. Each failure is one JSON log line
saying why, so a crash-looping pod explains itself in ``kubectl logs``.
"""

from __future__ import annotations

import gc
import logging
import logging.config
import os
import signal
from collections.abc import Mapping
from types import FrameType

import uvicorn

from ml.serving.app import ModelService
from ml.serving.config import LOG_LEVELS, ConfigError, ServingConfig
from ml.serving.http import HttpServer
from ml.serving.logs import log_config
from ml.serving.model import ModelError, load_model

log = logging.getLogger("ml.serving")


def build_server(config: ServingConfig) -> HttpServer | uvicorn.Server:
    """Load the model (fails fast, before the port opens) and put the app behind a server.

    Both servers offer ``run(sockets=None)``, ``started`` and ``should_exit``.
    """
    model = load_model(
        config.model_uri,
        config.registration_path,
        name=config.model_name,
        intra_op_threads=config.intra_op_threads,
    )
    app = ModelService(model, config)
    if config.http_server == "builtin":
        return HttpServer(
            app,
            config.host,
            config.port,
            graceful_timeout_s=config.graceful_timeout_s,
            keep_alive_s=config.keep_alive_s,
        )
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
            timeout_keep_alive=round(config.keep_alive_s),
            backlog=2048,
        )
    )


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
