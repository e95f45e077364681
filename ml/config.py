"""Typed, validated view of a model's params, loaded once per process.

A model's knobs come from two files: the repository's root `params.yaml` (what every model
shares: export settings, the latency gate, the registry alias, drift statistics) and the model's
own `models/<name>/params.yaml` (its data, input schema, task, network, training, accuracy gates,
schedules, card). Each key lives in exactly one of them, because DVC tracks a parameter by file
and key: a key set in both would be tracked twice and could not say which value a stage used.
The merged mapping is validated once; a typo, a wrong type or an out-of-range value stops the
stage with the file and the key named (e.g. ``models/digits/params.yaml: train.epochs: ...``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ml.schema import ImageInput, InputSchema, TaskSpec
from ml.yaml_dialect import YamlError, locate, parse


class ParamsError(ValueError):
    """A params file is missing, unreadable or invalid; the message names file and key."""


class _Strict(BaseModel):
    # forbid: an unknown key is an error, not silently ignored; strict: "3" is not an int.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
# The baselines evaluate fits on every model's own split (ml/stages/evaluate.py)
BASELINES = ("majority", "logistic_regression")
Baseline = Literal["majority", "logistic_regression"]
Share = Annotated[float, Field(ge=0.0, le=1.0)]


class DataParams(_Strict):
    # sklearn:<name> (a data set bundled with scikit-learn: digits, breast_cancer, wine, iris...)
    # or a .csv / .parquet / .npz path relative to the model's folder
    source: str = Field(min_length=1)
    label_column: str = Field(min_length=1)
    test_size: Fraction
    val_size: Fraction
    min_class_share: Annotated[float, Field(ge=0.0, lt=1.0)]
    # prepare keeps one copy of identical rows; more than this share of copies is refused: a file
    # that repeats a fifth of itself is a broken export or a join gone wrong, not data to train on
    max_duplicate_share: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> "DataParams":
        if self.test_size + self.val_size >= 0.9:
            raise ValueError("test_size + val_size must be < 0.9 so training data remains")
        return self


class CnnParams(_Strict):
    """A small CNN for single-channel images: a 3x3 conv + 2x2 max-pool per width."""

    family: Literal["cnn"]
    channels: list[Annotated[int, Field(ge=1, le=512)]] = Field(min_length=1, max_length=3)
    hidden: int = Field(ge=1, le=4096)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)]


class MlpParams(_Strict):
    """A multi-layer perceptron for any flat input: one ReLU layer per hidden width."""

    family: Literal["mlp"]
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(min_length=0, max_length=4)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)]


ModelParams = Annotated[CnnParams | MlpParams, Field(discriminator="family")]


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


class GateParams(_Strict):
    """Release gates, checked by the register stage before anything reaches the registry."""

    min_accuracy: Share
    min_roc_auc: Share
    # test accuracy minus each baseline's, both on the same split (evaluate fits the baselines):
    # 0.0 = at least as accurate as that baseline; every baseline evaluate computes must be named
    min_gain_over_baselines: dict[Baseline, Annotated[float, Field(ge=-1.0, le=1.0)]]

    @field_validator("min_gain_over_baselines")
    @classmethod
    def _every_baseline(cls, value: dict[str, float]) -> dict[str, float]:
        missing = sorted(set(BASELINES) - set(value))
        if missing:
            raise ValueError(f"needs a minimum gain over every baseline; missing {missing}")
        return value

    max_p99_latency_ms: float = Field(gt=0.0)
    latency_samples: int = Field(ge=100)  # single-row predictions timed after warm-up
    latency_warmup: int = Field(ge=0)


class RegistryParams(_Strict):
    alias: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")


class CardParams(_Strict):
    """The model card's prose: what the model is for and where it must not be trusted."""

    intended_use: str = Field(min_length=1)
    limitations: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


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
    input: InputSchema
    task: TaskSpec
    model: ModelParams
    train: TrainParams
    export: ExportParams
    gates: GateParams
    registry: RegistryParams
    card: CardParams
    monitoring: MonitoringParams

    @model_validator(mode="after")
    def _family_fits_input(self) -> "Params":
        if isinstance(self.model, CnnParams) and not isinstance(self.input, ImageInput):
            raise ValueError("model.family cnn needs input.kind image (use mlp for tabular)")
        if isinstance(self.model, CnnParams) and isinstance(self.input, ImageInput):
            # each width halves the image (2x2 pooling): caught here, before any stage runs,
            # rather than by train after DVC removed its outputs
            pools, (height, width) = len(self.model.channels), self.input.shape
            if height >> pools < 1 or width >> pools < 1:
                raise ValueError(
                    f"model.channels: {pools} pooled conv layers shrink a {height}x{width}"
                    " image to nothing: use fewer model.channels"
                )
        return self


# -- reading and merging -------------------------------------------------------------------------


def read_params_yaml(path: Path) -> object:
    """The parsed YAML of a params file, not yet validated (for tools that edit it first), read
    in DVC's dialect (YAML 1.2, ml/yaml_dialect.py) so the stages see the values dvc.lock holds."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ParamsError(f"{path}: cannot read params file: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ParamsError(f"{path}: not UTF-8 text: {error.reason}") from None
    try:
        return parse(text)
    except YamlError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None


def _line_of(path: Path, loc: tuple[str, ...]) -> str:
    """`path:line` of the key (or of its deepest existing parent), for messages; `path` alone
    when the file cannot be read again or holds none of it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return str(path)
    keys: list[str | int] = [int(p) if p.isdigit() else p for p in loc]
    found = locate(text, keys)
    return f"{path}:{found[0]}" if found else str(path)


def _suggestion(loc: tuple[str, ...]) -> str:
    """' (did you mean test_size?)' for a misspelt key of a known section, else ''."""
    node: Any = Params
    for part in loc[:-1]:
        fields = getattr(node, "model_fields", None)
        if fields is None or part not in fields:
            return ""
        annotation = fields[part].annotation
        node = annotation if isinstance(annotation, type) else None
    fields = getattr(node, "model_fields", None)
    if not fields:
        return ""
    close = difflib.get_close_matches(loc[-1], list(fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def merge_shared(
    own: Mapping[str, Any], own_path: Path, shared: Mapping[str, Any], shared_path: Path
) -> tuple[dict[str, Any], dict[tuple[str, ...], Path]]:
    """Deep-merge the shared params under a model's own; returns (merged, key -> file).

    A leaf present in both files is an error: DVC tracks each key in the file a stage lists,
    so a value that could come from either file would make the lock lie about what was used."""
    origin: dict[tuple[str, ...], Path] = {}

    def walk(a: Mapping[str, Any], b: Mapping[str, Any], prefix: tuple[str, ...]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for key in list(a) + [k for k in b if k not in a]:
            here = (*prefix, str(key))
            in_a, in_b = key in a, key in b
            if in_a and in_b:
                if isinstance(a[key], Mapping) and isinstance(b[key], Mapping):
                    merged[key] = walk(a[key], b[key], here)
                    continue
                raise ParamsError(
                    f"{own_path}: {'.'.join(here)} is also set in {shared_path}; a key lives in"
                    " one file only (move it out of the shared file to set it per model)"
                )
            value = a[key] if in_a else b[key]
            origin[here] = own_path if in_a else shared_path
            merged[key] = value
        return merged

    return walk(own, shared, ()), origin


def _source_of(
    loc: tuple[str, ...], origin: Mapping[tuple[str, ...], Path], fallback: Path
) -> Path:
    for length in range(len(loc), 0, -1):
        found = origin.get(loc[:length])
        if found is not None:
            return found
    # a section both files contribute to, or a key missing everywhere: name the model's file
    return fallback


def _format_errors(
    path: Path, error: ValidationError, origin: Mapping[tuple[str, ...], Path]
) -> str:
    lines = [f"{path}: {len(error.errors())} invalid value(s):"]
    for item in error.errors():
        # discriminated unions add the tag to the location (model.cnn.channels): drop it
        loc = tuple(str(p) for p in item["loc"] if p not in ("cnn", "mlp", "image", "tabular"))
        key = ".".join(loc) or "<root>"
        where = _line_of(_source_of(loc, origin, path), loc)
        if item["type"] == "extra_forbidden":
            lines.append(f"  {where}: {key}: unknown key{_suggestion(loc)}")
        elif item["type"] == "missing":
            lines.append(f"  {where}: {key}: missing")
        else:
            lines.append(f"  {where}: {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_params(
    raw: object,
    path: Path,
    shared_raw: object = None,
    shared_path: Path | None = None,
) -> Params:
    """Validate already-parsed mappings; the paths are only used in messages."""
    for value, where in ((raw, path), (shared_raw, shared_path)):
        if where is not None and value is not None and not isinstance(value, dict):
            raise ParamsError(
                f"{where}: top level must be a mapping of sections, got {type(value).__name__}"
            )
    if not isinstance(raw, dict):
        raise ParamsError(
            f"{path}: top level must be a mapping of sections, got {type(raw).__name__}"
        )
    merged: dict[str, Any] = dict(raw)
    origin: dict[tuple[str, ...], Path] = {}
    if isinstance(shared_raw, dict) and shared_path is not None:
        merged, origin = merge_shared(raw, path, shared_raw, shared_path)
    try:
        return Params.model_validate(merged)
    except ValidationError as error:
        raise ParamsError(_format_errors(path, error, origin)) from None


def load_params(path: str | Path, shared_path: str | Path | None = None) -> Params:
    """Read a model's params (and the shared root params under it) and validate them."""
    path = Path(path)
    shared = Path(shared_path) if shared_path is not None else None
    raw = read_params_yaml(path)
    shared_raw = read_params_yaml(shared) if shared is not None else None
    return parse_params(raw, path, shared_raw, shared)


def resolved_params(params: Params) -> dict[str, Any]:
    """The merged params as plain data (the drift CronJob's config)."""
    return params.model_dump(mode="json")


def model_params(params: Params) -> dict[str, Any]:
    """The params that made the model: every section but `monitoring`, which configures how the
    model is watched in production and reruns no stage (what the registration record holds)."""
    return params.model_dump(mode="json", exclude={"monitoring"})
