"""Service configuration from environment variables, validated once at start-up.

pydantic-settings reads the variables: each field names its variable (`validation_alias`) and
its bounds, and a validation error is turned into one ConfigError naming the variable, its value
and the accepted form. The values are plain attributes afterwards: the hot path reads them as it
read the dataclass before (a field access), never the environment.

Every variable has a safe default except the fault-injection ones, which are off unless set and
are refused outright when ``DEPLOY_ENV=production``: a rehearsal knob must never reach users.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_MODEL_NAME = "digits-classifier"
DEGRADE_MODES = ("shuffle", "constant")
DEPLOY_ENVS = ("dev", "staging", "production")
LOG_LEVELS = ("debug", "info", "warning", "error")
HTTP_SERVERS = ("builtin", "uvicorn", "granian")
# Read as given: a token or a path may hold spaces on purpose.
_UNSTRIPPED = ("ADMIN_TOKEN", "SAMPLE_TOKEN", "MODEL_REGISTRATION", "MODEL_NAME")
# Choices compared case-insensitively, as before.
_LOWERED = ("LOG_LEVEL", "DEPLOY_ENV", "HTTP_SERVER", "FAULT_DEGRADE")


class ConfigError(ValueError):
    """An environment variable is invalid; the message names the variable and the accepted form."""


_FIELDS = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True, extra="ignore")


class FaultConfig(BaseModel):
    """Deliberate misbehaviour for canary rehearsals (all off by default)."""

    model_config = _FIELDS

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0, validation_alias="FAULT_ERROR_RATE")
    latency_ms: float = Field(default=0.0, ge=0.0, le=60_000.0, validation_alias="FAULT_LATENCY_MS")
    degrade: Literal["", "shuffle", "constant"] = Field(
        default="", validation_alias="FAULT_DEGRADE"
    )

    @property
    def active(self) -> bool:
        return self.error_rate > 0.0 or self.latency_ms > 0.0 or self.degrade != ""

    def describe(self) -> dict[str, object]:
        return {
            "error_rate": self.error_rate,
            "latency_ms": self.latency_ms,
            "degrade": self.degrade or None,
        }


# The mapping `from_env` reads; empty for a config built from keyword arguments (tests, tools),
# so a variable of the calling process never leaks into one.
_ENVIRONMENT: ContextVar[Mapping[str, str]] = ContextVar("serving_environment", default={})


class _MappingSource(PydanticBaseSettingsSource):
    """The variables of `from_env`'s mapping: an empty (or blank) one means "use the default"."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the mapping as a whole

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, raw in _ENVIRONMENT.get().items():
            if raw.strip() == "":
                continue
            value = raw if name in _UNSTRIPPED else raw.strip()
            values[name] = value.lower() if name in _LOWERED else value
        return values


class ServingConfig(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True, validate_by_name=True, validate_by_alias=True, extra="ignore"
    )

    model_uri: str = Field(default="models/model.onnx", validation_alias="MODEL_URI")
    registration_path: str | None = Field(default=None, validation_alias="MODEL_REGISTRATION")
    model_name: str | None = Field(default=None, validation_alias="MODEL_NAME")
    host: str = Field(default="127.0.0.1", validation_alias="HOST")
    port: int = Field(default=8080, ge=0, le=65535, validation_alias="PORT")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, validation_alias="MAX_BODY_BYTES")
    max_batch: int = Field(default=256, ge=1, validation_alias="MAX_BATCH")
    admin_token: str | None = Field(default=None, validation_alias="ADMIN_TOKEN")
    intra_op_threads: int = Field(default=1, ge=1, validation_alias="ORT_INTRA_OP_THREADS")
    # rows merged into one onnxruntime call across concurrent requests (batching.py); 0 = off
    batch_merge_rows: int = Field(default=256, ge=0, le=65536, validation_alias="BATCH_MERGE_ROWS")
    # threads running merged calls of many-row requests beside the event loop (batching.py);
    # 0 = every call on the loop. 1 measured fastest on 2 CPUs (ml/serving/README.md)
    inference_threads: int = Field(default=1, ge=0, le=64, validation_alias="INFERENCE_THREADS")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", validation_alias="LOG_LEVEL"
    )
    deploy_env: Literal["dev", "staging", "production"] = Field(
        default="dev", validation_alias="DEPLOY_ENV"
    )
    graceful_timeout_s: float = Field(
        default=20.0, ge=0.0, le=3600.0, validation_alias="GRACEFUL_TIMEOUT_S"
    )
    # builtin (ml/serving/http.py) | uvicorn | granian
    http_server: Literal["builtin", "uvicorn", "granian"] = Field(
        default="builtin", validation_alias="HTTP_SERVER"
    )
    # -- limits against hostile clients (each one's threat: ml/serving/README.md, "Limits") -------
    # idle time allowed between requests on a connection
    keep_alive_s: float = Field(default=75.0, ge=0.1, le=3600.0, validation_alias="KEEP_ALIVE_S")
    # from a request's first byte (or the connect) to its last header
    header_timeout_s: float = Field(
        default=5.0, ge=0.1, le=10.0, validation_alias="HEADER_TIMEOUT_S"
    )
    # grace before the body must keep up with body_min_rate
    body_timeout_s: float = Field(default=10.0, ge=0.1, le=600.0, validation_alias="BODY_TIMEOUT_S")
    # bytes per second a body must average after that grace
    body_min_rate: int = Field(default=65536, ge=1, le=1 << 30, validation_alias="BODY_MIN_RATE")
    # how long a client may leave its answers unread
    send_timeout_s: float = Field(default=10.0, ge=0.1, le=600.0, validation_alias="SEND_TIMEOUT_S")
    # request line and headers (and trailers) together
    max_header_bytes: int = Field(
        default=16384, ge=1024, le=1 << 20, validation_alias="MAX_HEADER_BYTES"
    )
    max_headers: int = Field(default=100, ge=8, le=1000, validation_alias="MAX_HEADERS")
    max_url_bytes: int = Field(default=8192, ge=256, le=1 << 20, validation_alias="MAX_URL_BYTES")
    # beyond: one request answered (503 unless a health check), close
    max_connections: int = Field(default=1024, ge=1, le=1 << 20, validation_alias="MAX_CONNECTIONS")
    # request bodies held at once over all connections
    max_buffered_bytes: int = Field(
        default=32 << 20, ge=1024, validation_alias="MAX_BUFFERED_BYTES"
    )
    # elements a v2 tensor's shape may declare
    max_tensor_elements: int = Field(
        default=1 << 20, ge=1, le=1 << 31, validation_alias="MAX_TENSOR_ELEMENTS"
    )
    # dimensions a v2 tensor's shape may have
    max_tensor_dims: int = Field(default=8, ge=1, le=32, validation_alias="MAX_TENSOR_DIMS")
    # reload: files only under this directory (default: the directory of a file MODEL_URI)
    model_dir: str | None = Field(default=None, validation_alias="MODEL_DIR")
    reload_timeout_s: float = Field(
        default=60.0, ge=1.0, le=3600.0, validation_alias="RELOAD_TIMEOUT_S"
    )
    faults: FaultConfig = Field(default_factory=FaultConfig)
    # input sample for the drift monitor (ml/serving/sampling.py); size 0 turns sampling off
    input_sample_size: int = Field(
        default=1024, ge=0, le=65536, validation_alias="INPUT_SAMPLE_SIZE"
    )
    input_sample_window_s: float = Field(
        default=3600.0, ge=1.0, le=7 * 86400.0, validation_alias="INPUT_SAMPLE_WINDOW_S"
    )
    sample_token: str | None = Field(default=None, validation_alias="SAMPLE_TOKEN")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # keyword arguments, then from_env's mapping; never os.environ behind the caller's back
        return (init_settings, _MappingSource(settings_cls))

    @model_validator(mode="before")
    @classmethod
    def _gather_faults(cls, data: Any) -> Any:
        """The FAULT_* variables make up `faults`."""
        if not isinstance(data, dict):
            return data
        faults = {k: data.pop(k) for k in list(data) if k.startswith("FAULT_")}
        if faults and "faults" not in data:
            data["faults"] = faults
        return data

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ServingConfig":
        """Read the variables listed in ml/serving/README.md; raise ConfigError on a bad one."""
        if "INFERENCE_THREAD" in env:  # the old boolean: ignoring it silently would surprise
            raise ConfigError(
                "INFERENCE_THREAD was replaced by INFERENCE_THREADS (a count; 0 = no worker thread)"
            )
        token = _ENVIRONMENT.set(env)
        try:
            config = cls()
        except ValidationError as exc:
            raise _config_error(exc) from None
        finally:
            _ENVIRONMENT.reset(token)
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


def _bounds(model: type[BaseModel], field: str) -> tuple[Any, Any]:
    low: Any = None
    high: Any = None
    for meta in model.model_fields[field].metadata:
        if isinstance(meta, annotated_types.Ge):
            low = meta.ge
        elif isinstance(meta, annotated_types.Le):
            high = meta.le
    return low, high


def _config_error(exc: ValidationError) -> ConfigError:
    """The first error as `NAME='value': expected ...`, the form the old hand parser used."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    model: type[BaseModel] = ServingConfig
    if loc[0] == "faults" and len(loc) > 1:
        model, loc = FaultConfig, loc[1:]
    name = loc[0]
    if name in model.model_fields:
        field = name
        alias = model.model_fields[name].validation_alias
        name = str(alias) if alias else name
    else:
        field = next(
            (f for f, info in model.model_fields.items() if info.validation_alias == name), ""
        )
    raw = error.get("input")
    kind = error["type"]
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return ConfigError(f"{name}={raw!r}: expected an integer")
    if kind in ("float_parsing", "float_type"):
        return ConfigError(f"{name}={raw!r}: expected a number")
    if kind == "literal_error":
        choices = model.model_fields[field].annotation.__args__  # type: ignore[union-attr]
        return ConfigError(f"{name}={raw!r}: expected one of {', '.join(c for c in choices if c)}")
    if field and kind in ("greater_than_equal", "less_than_equal", "finite_number"):
        low, high = _bounds(model, field)
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        return ConfigError(f"{name}={raw!r}: expected a value in {bounds}")
    return ConfigError(f"{name}={raw!r}: {error['msg']}")
