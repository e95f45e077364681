"""Typed, validated view of params.yaml, loaded once per process.

Every stage reads its knobs through `load_params`, so a typo in params.yaml is caught before any
work starts and the message names the file and the key (e.g. ``params.yaml: train.epochs: ...``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names file and key."""


class _Strict(BaseModel):
    # forbid: an unknown key is an error, not silently ignored; strict: "3" is not an int.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


class DataParams(_Strict):
    source: str = Field(min_length=1)
    label_column: str = Field(min_length=1)
    num_classes: int = Field(ge=2, le=1000)
    pixel_max: float = Field(gt=0.0)
    test_size: Fraction
    val_size: Fraction
    min_class_share: Annotated[float, Field(ge=0.0, lt=1.0)]

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> "DataParams":
        if self.test_size + self.val_size >= 0.9:
            raise ValueError("test_size + val_size must be < 0.9 so training data remains")
        return self


class ModelParams(_Strict):
    channels: list[Annotated[int, Field(ge=1, le=512)]] = Field(min_length=1, max_length=3)
    hidden: int = Field(ge=1, le=4096)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)]


class TrainParams(_Strict):
    epochs: int = Field(ge=1, le=10_000)
    batch_size: int = Field(ge=1, le=65_536)
    learning_rate: float = Field(gt=0.0, le=10.0)
    weight_decay: float = Field(ge=0.0, le=1.0)
    patience: int = Field(ge=1)
    device: str
    amp: bool

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError("must be auto, cpu, cuda or cuda:N")


class ExportParams(_Strict):
    opset: int = Field(ge=13, le=21)
    parity_atol: float = Field(gt=0.0, le=0.1)
    latency_samples: int = Field(ge=100)
    warmup: int = Field(ge=0)


class RegistryParams(_Strict):
    model_name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    alias: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")


class GateParams(_Strict):
    min_accuracy: Annotated[float, Field(ge=0.0, le=1.0)]
    max_p99_latency_ms: float = Field(gt=0.0)


class DriftParams(_Strict):
    threshold: float = Field(gt=0.0, le=10.0)
    statistic: Literal["wasserstein", "psi"]
    drifted_share: Fraction
    prediction_threshold: float = Field(gt=0.0, le=1.0)
    bins: int = Field(ge=2, le=100)
    feature_groups: int = Field(ge=1, le=1024)
    min_live_rows: int = Field(ge=10)
    max_live_rows: int = Field(ge=10, le=1_000_000)
    max_reference_rows: int = Field(ge=10, le=1_000_000)
    schedule: str

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _check_cron(value)

    @model_validator(mode="after")
    def _live_bounds(self) -> "DriftParams":
        if self.min_live_rows > self.max_live_rows:
            raise ValueError("min_live_rows must be <= max_live_rows")
        return self


class RetrainParams(_Strict):
    schedule: str
    cooldown_hours: float = Field(ge=0.0, le=24 * 90)
    max_run_hours: float = Field(gt=0.0, le=24 * 14)
    performance_drop: Fraction
    new_data_rows: int = Field(ge=1)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _check_cron(value)


class MonitoringParams(_Strict):
    drift: DriftParams
    retrain: RetrainParams


def _check_cron(value: str) -> str:
    """Five fields of digits, `*`, `/`, `,`, `-`: what both CronJob and CronWorkflow accept."""
    fields = value.split()
    if len(fields) != 5 or not all(re.fullmatch(r"[0-9*/,-]+", f) for f in fields):
        raise ValueError("must be a five-field cron expression such as '0 3 * * 1'")
    return value


class Params(_Strict):
    seed: int = Field(ge=0, le=2**32 - 1)
    data: DataParams
    model: ModelParams
    train: TrainParams
    export: ExportParams
    registry: RegistryParams
    gates: GateParams
    monitoring: MonitoringParams


def _format_errors(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: {len(error.errors())} invalid value(s):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {path}: {key}: unknown key")
        else:
            lines.append(f"  {path}: {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_params(raw: object, path: Path) -> Params:
    """Validate an already-parsed mapping; `path` is only used in messages."""
    if not isinstance(raw, dict):
        raise ParamsError(
            f"{path}: top level must be a mapping of sections, got {type(raw).__name__}"
        )
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_format_errors(path, error)) from None


def read_params_yaml(path: Path) -> object:
    """The parsed YAML of a params file, not yet validated (for tools that edit it first)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ParamsError(f"{path}: cannot read params file: {error.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raises ParamsError naming file and key on any problem."""
    path = Path(path)
    return parse_params(read_params_yaml(path), path)
