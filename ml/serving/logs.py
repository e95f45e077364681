"""Structured logs: one JSON object per line on stderr, for the service and uvicorn alike."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import orjson

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra fields, "exc"}``; extras via ``extra={...}``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                document[key] = value
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


def log_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping, also handed to uvicorn as its ``log_config``."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    named = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": handler},
        "loggers": {
            "ml.serving": named,
            "uvicorn": named,
            "uvicorn.error": {**named, "handlers": []} | {"propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "_granian": named,
            "granian.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
