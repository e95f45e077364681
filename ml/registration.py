"""The registration record: written once by the register stage, read by serving, release, the
merge-request report and the rehearsal. One typed model, so each reader gets the same checks.

A record that does not validate is refused wherever it is read: the service will not show an
arbitrary JSON document as its `/metadata`, and a release will not ship a model it cannot identify.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
ModelName = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")]


class RecordError(ValueError):
    """A registration record is missing, unreadable or not of the contract's shape."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateResult(_Record):
    gate: str = Field(min_length=1)
    measured: float
    limit: float
    passed: bool


class RegistrationRecord(_Record):
    """What `models/registration.json` holds (docs/CONTRACTS.md describes each field)."""

    model_name: ModelName
    alias: str = Field(min_length=1, max_length=255)
    version: str | None = Field(default=None, pattern=r"^[0-9]+$")
    model_uri: str | None = None
    run_id: str = Field(min_length=1, max_length=64)
    git_commit: str = Field(min_length=1, max_length=80)
    data_hash: Sha256
    params_hash: Sha256
    params: dict[str, Any]
    metrics: dict[str, float]
    latency: dict[str, float]
    onnx_sha256: Sha256
    registered_at: datetime | None = None
    gates: list[GateResult]


def parse_record(text: str | bytes, source: str = "registration record") -> RegistrationRecord:
    """Validate a record's JSON text; the error names the source and every bad field."""
    try:
        return RegistrationRecord.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise RecordError(f"{source}: not a registration record: {problems}") from None


def read_record(path: str | Path) -> RegistrationRecord:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise RecordError(f"{path}: cannot read the registration record: {exc.strerror}") from None
    return parse_record(text, str(path))
