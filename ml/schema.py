"""What a model takes and what it predicts, declared once in its params.yaml and carried into its
registration record: the input schema (an image of a given shape, or named tabular features,
with the range of raw values and the normalisation the exported graph applies) and the task
(binary or multi-class, the class names, the positive class).

Every part that used to assume 64 pixels reads these instead: prepare and validate (columns,
ranges), the network (input width, image shape, normalisation), export (the ONNX input width),
serving metadata and its input metric, the drift monitor (per-feature ranges), the canary
rehearsal (the model's own test split) and the model card.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

Bounds = Annotated[list[float], Field(min_length=2, max_length=2)]
# Normalisation applied inside the exported graph, so clients always send raw values:
# range: (x - low) / (high - low) with the declared range; standardize: (x - mean) / std of the
# training split (fitted by the train stage, stored in the checkpoint); none: x as sent.
Normalisation = Literal["range", "standardize", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_bounds(name: str, bounds: list[float]) -> None:
    low, high = bounds
    if not (np.isfinite(low) and np.isfinite(high)) or low >= high:
        raise ValueError(f"{name}: range must be two finite numbers [low, high] with low < high")


class ImageInput(_Strict):
    """A single-channel image sent as height x width raw values, row-major."""

    kind: Literal["image"]
    shape: Annotated[list[Annotated[int, Field(ge=2, le=4096)]], Field(min_length=2, max_length=2)]
    range: Bounds
    normalisation: Normalisation
    dtype: Literal["float32"] = "float32"

    @model_validator(mode="after")
    def _valid_range(self) -> "ImageInput":
        _check_bounds("range", self.range)
        return self

    @property
    def feature_count(self) -> int:
        return self.shape[0] * self.shape[1]

    def feature_names(self) -> list[str]:
        return [f"px_{r}_{c}" for r in range(self.shape[0]) for c in range(self.shape[1])]

    def bounds(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        low = np.full(self.feature_count, self.range[0], dtype=np.float32)
        high = np.full(self.feature_count, self.range[1], dtype=np.float32)
        return low, high

    def describe(self) -> str:
        return (
            f"{self.shape[0]}x{self.shape[1]} single-channel images as {self.feature_count} raw"
            f" values in [{self.range[0]:g}, {self.range[1]:g}], row-major"
        )


class Feature(_Strict):
    name: str = Field(min_length=1, max_length=200)
    range: Bounds

    @model_validator(mode="after")
    def _valid_range(self) -> "Feature":
        _check_bounds(f"{self.name}.range", self.range)
        return self


class TabularInput(_Strict):
    """Named numeric features, each with its raw-value range, in the order clients send them
    (a list, not a mapping: a tool that sorts keys must never be able to reorder the columns)."""

    kind: Literal["tabular"]
    features: list[Feature] = Field(min_length=1, max_length=10_000)
    normalisation: Normalisation
    dtype: Literal["float32"] = "float32"

    @model_validator(mode="after")
    def _unique_names(self) -> "TabularInput":
        names = self.feature_names()
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"feature names must be unique; repeated: {repeated}")
        return self

    @property
    def feature_count(self) -> int:
        return len(self.features)

    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def bounds(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        low = np.array([f.range[0] for f in self.features], dtype=np.float32)
        high = np.array([f.range[1] for f in self.features], dtype=np.float32)
        return low, high

    def describe(self) -> str:
        return (
            f"{self.feature_count} named numeric features (raw units, ranges declared per feature)"
        )


InputSchema = Annotated[ImageInput | TabularInput, Field(discriminator="kind")]


class TaskSpec(_Strict):
    """binary: exactly two classes, metrics about `positive_class`; multiclass: three or more."""

    type: Literal["binary", "multiclass"]
    classes: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        min_length=2, max_length=1000
    )
    positive_class: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "TaskSpec":
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be unique")
        if self.type == "binary":
            if len(self.classes) != 2:
                raise ValueError(f"a binary task has 2 classes, got {len(self.classes)}")
            if self.positive_class is None:
                raise ValueError("a binary task names its positive_class (one of classes)")
        elif len(self.classes) < 3:
            raise ValueError("a multiclass task has at least 3 classes (2 is type: binary)")
        elif self.positive_class is not None:
            raise ValueError("positive_class is only for type: binary")
        if self.positive_class is not None and self.positive_class not in self.classes:
            raise ValueError(f"positive_class {self.positive_class!r} is not one of {self.classes}")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def positive_index(self) -> int:
        """The label of the positive class (binary tasks only)."""
        assert self.positive_class is not None, "positive_index is only defined for binary tasks"
        return self.classes.index(self.positive_class)
