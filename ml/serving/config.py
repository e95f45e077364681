"""Service configuration from environment variables, validated once at start-up.

Every variable has a safe default except the fault-injection ones, which are off unless set and
are refused outright when ``DEPLOY_ENV=production``: a rehearsal knob must never reach users.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_MODEL_NAME = "digits-classifier"
DEGRADE_MODES = ("shuffle", "constant")
DEPLOY_ENVS = ("dev", "staging", "production")
LOG_LEVELS = ("debug", "info", "warning", "error")
HTTP_SERVERS = ("builtin", "uvicorn", "granian")


class ConfigError(ValueError):
    """An environment variable is invalid; the message names the variable and the accepted form."""


@dataclass(frozen=True)
class FaultConfig:
    """Deliberate misbehaviour for canary rehearsals (all off by default)."""

    error_rate: float = 0.0
    latency_ms: float = 0.0
    degrade: Literal["", "shuffle", "constant"] = ""

    @property
    def active(self) -> bool:
        return self.error_rate > 0.0 or self.latency_ms > 0.0 or self.degrade != ""

    def describe(self) -> dict[str, object]:
        return {
            "error_rate": self.error_rate,
            "latency_ms": self.latency_ms,
            "degrade": self.degrade or None,
        }


@dataclass(frozen=True)
class ServingConfig:
    model_uri: str = "models/model.onnx"
    registration_path: str | None = None
    model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1 << 20
    max_batch: int = 256
    admin_token: str | None = None
    intra_op_threads: int = 1
    # rows merged into one onnxruntime call across concurrent requests (batching.py); 0 = off
    batch_merge_rows: int = 256
    # threads running merged calls of many-row requests beside the event loop (batching.py);
    # 0 = every call on the loop. 1 measured fastest on 2 CPUs (ml/serving/README.md)
    inference_threads: int = 1
    log_level: str = "info"
    deploy_env: str = "dev"
    graceful_timeout_s: float = 20.0
    http_server: str = "builtin"  # builtin (ml/serving/http.py) | uvicorn | granian
    # -- limits against hostile clients (each one's threat: ml/serving/README.md, "Limits") -------
    keep_alive_s: float = 75.0  # idle time allowed between requests on a connection
    header_timeout_s: float = 5.0  # from a request's first byte (or the connect) to its last header
    body_timeout_s: float = 10.0  # grace before the body must keep up with body_min_rate
    body_min_rate: int = 65536  # bytes per second a body must average after that grace
    send_timeout_s: float = 10.0  # how long a client may leave its answers unread
    max_header_bytes: int = 16384  # request line and headers (and trailers) together
    max_headers: int = 100
    max_url_bytes: int = 8192
    max_connections: int = 1024  # beyond: one request answered (503 unless a health check), close
    max_buffered_bytes: int = 32 << 20  # request bodies held at once over all connections
    max_tensor_elements: int = 1 << 20  # elements a v2 tensor's shape may declare
    max_tensor_dims: int = 8  # dimensions a v2 tensor's shape may have
    # reload: files only under this directory (default: the directory of a file MODEL_URI)
    model_dir: str | None = None
    reload_timeout_s: float = 60.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    # input sample for the drift monitor (ml/serving/sampling.py); size 0 turns sampling off
    input_sample_size: int = 1024
    input_sample_window_s: float = 3600.0
    sample_token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ServingConfig":
        """Read the variables listed in ml/serving/README.md; raise ConfigError on a bad one."""
        degrade = env.get("FAULT_DEGRADE", "").strip().lower()
        if degrade not in ("", *DEGRADE_MODES):
            raise ConfigError(
                f"FAULT_DEGRADE={degrade!r}: expected one of {', '.join(DEGRADE_MODES)}"
            )
        faults = FaultConfig(
            error_rate=_number(env, "FAULT_ERROR_RATE", 0.0, low=0.0, high=1.0),
            latency_ms=_number(env, "FAULT_LATENCY_MS", 0.0, low=0.0, high=60_000.0),
            degrade=degrade,  # type: ignore[arg-type]  # checked against DEGRADE_MODES above
        )
        deploy_env = env.get("DEPLOY_ENV", "dev").strip().lower()
        if deploy_env not in DEPLOY_ENVS:
            raise ConfigError(
                f"DEPLOY_ENV={deploy_env!r}: expected one of {', '.join(DEPLOY_ENVS)}"
            )
        if "INFERENCE_THREAD" in env:  # the old boolean: ignoring it silently would surprise
            raise ConfigError(
                "INFERENCE_THREAD was replaced by INFERENCE_THREADS (a count; 0 = no worker thread)"
            )
        log_level = env.get("LOG_LEVEL", "info").strip().lower()
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL={log_level!r}: expected debug, info, warning or error")
        config = cls(
            model_uri=env.get("MODEL_URI", cls.model_uri).strip() or cls.model_uri,
            registration_path=env.get("MODEL_REGISTRATION") or None,
            model_name=env.get("MODEL_NAME") or None,
            host=env.get("HOST", cls.host).strip() or cls.host,
            port=int(_number(env, "PORT", cls.port, low=0, high=65535, integer=True)),
            max_body_bytes=int(
                _number(env, "MAX_BODY_BYTES", cls.max_body_bytes, low=1024, integer=True)
            ),
            max_batch=int(_number(env, "MAX_BATCH", cls.max_batch, low=1, integer=True)),
            admin_token=env.get("ADMIN_TOKEN") or None,
            intra_op_threads=int(
                _number(env, "ORT_INTRA_OP_THREADS", cls.intra_op_threads, low=1, integer=True)
            ),
            batch_merge_rows=int(
                _number(
                    env, "BATCH_MERGE_ROWS", cls.batch_merge_rows, low=0, high=65536, integer=True
                )
            ),
            inference_threads=int(
                _number(
                    env, "INFERENCE_THREADS", cls.inference_threads, low=0, high=64, integer=True
                )
            ),
            log_level=log_level,
            deploy_env=deploy_env,
            graceful_timeout_s=_number(
                env, "GRACEFUL_TIMEOUT_S", cls.graceful_timeout_s, low=0.0, high=3600.0
            ),
            http_server=_choice(env, "HTTP_SERVER", cls.http_server, HTTP_SERVERS),
            keep_alive_s=_number(env, "KEEP_ALIVE_S", cls.keep_alive_s, low=0.1, high=3600.0),
            header_timeout_s=_number(
                env, "HEADER_TIMEOUT_S", cls.header_timeout_s, low=0.1, high=10.0
            ),
            body_timeout_s=_number(env, "BODY_TIMEOUT_S", cls.body_timeout_s, low=0.1, high=600.0),
            body_min_rate=int(
                _number(env, "BODY_MIN_RATE", cls.body_min_rate, low=1, high=1 << 30, integer=True)
            ),
            send_timeout_s=_number(env, "SEND_TIMEOUT_S", cls.send_timeout_s, low=0.1, high=600.0),
            max_header_bytes=int(
                _number(
                    env,
                    "MAX_HEADER_BYTES",
                    cls.max_header_bytes,
                    low=1024,
                    high=1 << 20,
                    integer=True,
                )
            ),
            max_headers=int(
                _number(env, "MAX_HEADERS", cls.max_headers, low=8, high=1000, integer=True)
            ),
            max_url_bytes=int(
                _number(
                    env, "MAX_URL_BYTES", cls.max_url_bytes, low=256, high=1 << 20, integer=True
                )
            ),
            max_connections=int(
                _number(
                    env, "MAX_CONNECTIONS", cls.max_connections, low=1, high=1 << 20, integer=True
                )
            ),
            max_buffered_bytes=int(
                _number(env, "MAX_BUFFERED_BYTES", cls.max_buffered_bytes, low=1024, integer=True)
            ),
            max_tensor_elements=int(
                _number(
                    env,
                    "MAX_TENSOR_ELEMENTS",
                    cls.max_tensor_elements,
                    low=1,
                    high=1 << 31,
                    integer=True,
                )
            ),
            max_tensor_dims=int(
                _number(env, "MAX_TENSOR_DIMS", cls.max_tensor_dims, low=1, high=32, integer=True)
            ),
            model_dir=env.get("MODEL_DIR", "").strip() or None,
            reload_timeout_s=_number(
                env, "RELOAD_TIMEOUT_S", cls.reload_timeout_s, low=1.0, high=3600.0
            ),
            faults=faults,
            input_sample_size=int(
                _number(
                    env, "INPUT_SAMPLE_SIZE", cls.input_sample_size, low=0, high=65536, integer=True
                )
            ),
            input_sample_window_s=_number(
                env, "INPUT_SAMPLE_WINDOW_S", cls.input_sample_window_s, low=1.0, high=7 * 86400.0
            ),
            sample_token=env.get("SAMPLE_TOKEN") or None,
        )
        config.check_deployable()
        return config

    def check_deployable(self) -> None:
        """Refuse fault injection in production: a misconfigured rehearsal must not reach users."""
        if self.deploy_env == "production" and self.faults.active:
            active = {k: v for k, v in self.faults.describe().items() if v}
            raise ConfigError(
                f"fault injection is refused when DEPLOY_ENV=production (set: {active}); "
                "unset the FAULT_* variables"
            )
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ConfigError("ADMIN_TOKEN must be at least 16 characters (or unset to disable)")
        if self.sample_token is not None and len(self.sample_token) < 16:
            raise ConfigError("SAMPLE_TOKEN must be at least 16 characters (or unset to disable)")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ConfigError(
                f"MAX_BUFFERED_BYTES={self.max_buffered_bytes} is below MAX_BODY_BYTES="
                f"{self.max_body_bytes}: one largest request could never be received"
            )

    @property
    def reload_dir(self) -> str | None:
        """Where reloads may read model files: MODEL_DIR, else the directory of a file MODEL_URI."""
        if self.model_dir is not None:
            return self.model_dir
        if self.model_uri.startswith("models:/"):
            return None
        return os.path.dirname(os.path.abspath(self.model_uri))


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
) -> float:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name}={raw!r}: expected {kind}") from None
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"{name}={raw!r}: expected a value in {bounds}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value
