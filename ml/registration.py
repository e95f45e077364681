"""The registration record: written once by the register stage, read by serving, release, the
merge-request report and the rehearsal. One typed model, so each reader gets the same checks.

One record, two files, split by what is true everywhere versus on one machine:
- `registration.json` (git-tracked) holds what follows from the content: the model's identity,
  input schema and task, data and params hashes, metrics, baselines, the ONNX sha256 and the
  gates those decide. A fresh clone re-running the pipeline writes it byte for byte the same.
- `registration.local.json` (git-ignored, beside it) is the same record plus the facts of the
  registering machine (MACHINE_LOCAL): the registry version and URI of *its* MLflow store, the
  run id, the git commit (with `-dirty`), the time, and the latency measured there.
Readers that need a registry version look it up by content (the ONNX sha256 tag on the version,
ml.tracking.registered_version) or read the local file where it exists.

A record that does not validate is refused wherever it is read: the service will not show an
arbitrary JSON document as its `/metadata`, and a release will not ship a model it cannot identify.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ml.schema import InputSchema, TaskSpec

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
ModelName = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")]
LOCAL_SUFFIX = ".local.json"
# Fields true only on the machine (and MLflow store) that registered the model: never in git.
MACHINE_LOCAL = ("version", "model_uri", "run_id", "git_commit", "registered_at", "latency")


class RecordError(ValueError):
    """A registration record is missing, unreadable or not of the contract's shape."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateResult(_Record):
    gate: str = Field(min_length=1)
    measured: float
    limit: float
    passed: bool


class LatencyMeasurement(_Record):
    """Single-row predictions of the exported model on the registering machine, and its gate."""

    p50_ms: float = Field(ge=0.0)
    p99_ms: float = Field(ge=0.0)
    mean_ms: float = Field(ge=0.0)
    samples: int = Field(ge=1)
    gate: GateResult


class RegistrationRecord(_Record):
    """What `registration.json` holds (docs/CONTRACTS.md describes each field)."""

    model_name: ModelName  # the MLflow registered model
    catalog_name: ModelName  # the model's key in models.yaml
    app: ModelName
    alias: str = Field(min_length=1, max_length=255)
    input: InputSchema
    task: TaskSpec
    data_hash: Sha256
    params_hash: Sha256
    params: dict[str, Any]
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    onnx_sha256: Sha256
    gates: list[GateResult]
    # machine-local (MACHINE_LOCAL): only in registration.local.json
    version: str | None = Field(default=None, pattern=r"^[0-9]+$")
    model_uri: str | None = None
    run_id: str | None = Field(default=None, min_length=1, max_length=64)
    git_commit: str | None = Field(default=None, min_length=1, max_length=80)
    registered_at: datetime | None = None
    latency: LatencyMeasurement | None = None

    def tracked(self) -> "RegistrationRecord":
        """The record without the machine-local facts: what goes into git."""
        return self.model_copy(update={field: None for field in MACHINE_LOCAL})

    def tracked_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(MACHINE_LOCAL))

    @property
    def all_gates(self) -> list[GateResult]:
        """Content gates plus, where measured here, the latency gate."""
        return [*self.gates, *([self.latency.gate] if self.latency else [])]


class ReleaseVerdict(_Record):
    """What `metrics/release.json` holds: the gate verdict register recorded (docs/CONTRACTS.md).
    Readers show it instead of deciding the gates again."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    gates_passed: bool
    released: bool  # this run registered the model and moved the alias
    failed_gates: int = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "ReleaseVerdict":
        if self.gates_passed != (self.failed_gates == 0):
            raise ValueError(
                f"gates_passed is {str(self.gates_passed).lower()} with failed_gates"
                f" {self.failed_gates}"
            )
        if self.released and not self.gates_passed:
            raise ValueError("released is true although a gate failed")
        return self


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
        for err in exc.errors()
    )


def read_release_verdict(path: str | Path) -> ReleaseVerdict:
    """`metrics/release.json`, validated; a missing or malformed file is a RecordError naming it
    (and the field)."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise RecordError(
            f"{path}: cannot read the recorded gate verdict: {exc.strerror}"
            " (the register stage writes it: run the model's pipeline)"
        ) from None
    try:
        return ReleaseVerdict.model_validate_json(text)
    except ValidationError as exc:
        raise RecordError(f"{path}: not a gate verdict: {_problems(exc)}") from None


def parse_record(text: str | bytes, source: str = "registration record") -> RegistrationRecord:
    """Validate a record's JSON text; the error names the source and every bad field."""
    try:
        return RegistrationRecord.model_validate_json(text)
    except ValidationError as exc:
        raise RecordError(f"{source}: not a registration record: {_problems(exc)}") from None


def read_record(path: str | Path) -> RegistrationRecord:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise RecordError(f"{path}: cannot read the registration record: {exc.strerror}") from None
    return parse_record(text, str(path))


def local_record_path(tracked: str | Path) -> Path:
    """`.../registration.json` -> `.../registration.local.json`."""
    path = Path(tracked)
    return path.with_name(path.stem + LOCAL_SUFFIX)


def read_best_record(tracked: str | Path) -> RegistrationRecord:
    """The local record when it describes the same model as the tracked one (same ONNX), else
    the tracked record: a stale local file from an earlier model is never shown as this one."""
    record = read_record(tracked)
    local = local_record_path(tracked)
    if local.is_file():
        full = read_record(local)
        if full.onnx_sha256 == record.onnx_sha256:
            return full
    return record
