"""Service configuration from environment variables, validated once at start-up.

Every variable has a safe default except the fault-injection ones, which are off unless set and
are refused outright when ``DEPLOY_ENV=production``: a rehearsal knob must never reach users.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_MODEL_NAME = "digits-classifier"
DEGRADE_MODES = ("shuffle", "constant")
DEPLOY_ENVS = ("dev", "staging", "production")
LOG_LEVELS = ("debug", "info", "warning", "error")
HTTP_SERVERS = ("builtin", "uvicorn")


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
    http_server: str = "builtin"  # builtin (ml/serving/http.py) | uvicorn
    keep_alive_s: float = 75.0
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
            keep_alive_s=_number(env, "KEEP_ALIVE_S", cls.keep_alive_s, low=1.0, high=3600.0),
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
