"""Data drift between the training reference and a live input sample.

Per feature: the Wasserstein distance normalised by the reference's standard deviation (what
Evidently calls "Wasserstein distance (normed)", threshold 0.1) and the population stability
index on reference-quantile bins. A feature drifts when the configured statistic exceeds
``threshold``; the inputs drift when at least ``drifted_share`` of the features do (one pixel
moving is noise, a third of them moving is a camera change). Separately, the predicted-class mix
is compared with the training labels by Jensen-Shannon distance (base 2, in [0, 1]).

Why not Evidently (0.7.23, measured here): it does not import with pandas 3 (the project's pin);
with pandas 2 it adds 31 packages (~340 MB: plotly, statsmodels, nltk, litestar...), imports in
~2.6 s and takes ~3.6 s per 64-feature report. The same statistics in numpy/scipy take ~10 ms,
which is what lets the false-positive test run over many seeds.

Memory is bounded by construction: the reference is subsampled to ``max_reference_rows`` and the
live sample arrives already bounded (the service's reservoir, merged to ``max_live_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from ml.config import DriftParams

Floats = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]

# PSI of an empty bin is infinite; smoothing every share by this keeps it finite and comparable.
_PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class Reference:
    """What the detector keeps of the training data: a bounded sample and derived statistics."""

    rows: Floats
    std: npt.NDArray[np.float64]
    edges: tuple[npt.NDArray[np.float64], ...]
    bin_shares: tuple[npt.NDArray[np.float64], ...]
    class_shares: npt.NDArray[np.float64] | None
    low: npt.NDArray[np.float32]  # per feature: the declared range of valid inputs
    high: npt.NDArray[np.float32]
    std_floor: npt.NDArray[np.float64]

    @property
    def features(self) -> int:
        return int(self.rows.shape[1])


def build_reference(
    rows: npt.ArrayLike,
    labels: npt.ArrayLike | None,
    params: DriftParams,
    num_classes: int,
    value_range: tuple[npt.ArrayLike, npt.ArrayLike],
    seed: int = 0,
) -> Reference:
    """Summarise the training inputs (and labels) once; ``value_range`` is (low, high) of valid
    inputs, per feature (the input schema's bounds) or one pair for every feature."""
    data = np.asarray(rows, dtype=np.float32)
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"reference must be a [rows, features] array with >= 2 rows: {data.shape}")
    if data.shape[0] > params.max_reference_rows:
        keep = np.random.default_rng(seed).choice(
            data.shape[0], params.max_reference_rows, replace=False
        )
        data = data[np.sort(keep)]
        labels = None if labels is None else np.asarray(labels)[np.sort(keep)]
    quantiles = np.linspace(0.0, 1.0, params.bins + 1)[1:-1]
    edges = tuple(
        np.unique(np.quantile(data[:, j].astype(np.float64), quantiles))
        for j in range(data.shape[1])
    )
    bin_shares = tuple(_bin_shares(data[:, j], edges[j]) for j in range(data.shape[1]))
    class_shares = None
    if labels is not None:
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
        class_shares = counts / counts.sum()
    low = np.broadcast_to(np.asarray(value_range[0], dtype=np.float32), data.shape[1:]).copy()
    high = np.broadcast_to(np.asarray(value_range[1], dtype=np.float32), data.shape[1:]).copy()
    return Reference(
        rows=data,
        std=data.std(axis=0).astype(np.float64),
        edges=edges,
        bin_shares=bin_shares,
        class_shares=class_shares,
        low=low,
        high=high,
        # a feature constant in training (a corner pixel always 0) has std 0: any movement
        # there is drift, but the score must stay finite, so divide by a sliver of its range
        std_floor=1e-3 * (high.astype(np.float64) - low.astype(np.float64)),
    )


@dataclass(frozen=True)
class FeatureScore:
    index: int
    wasserstein: float
    psi: float
    drifted: bool


@dataclass(frozen=True)
class GroupScore:
    name: str
    wasserstein: float
    psi: float
    drifted_share: float


@dataclass(frozen=True)
class DriftResult:
    """Everything a report, a metric or a trigger needs; ``detected`` is the verdict."""

    live_rows: int
    sufficient_data: bool
    features: tuple[FeatureScore, ...]
    groups: tuple[GroupScore, ...]
    drifted_share: float
    prediction_shift: float | None
    live_class_shares: tuple[float, ...] | None
    reference_class_shares: tuple[float, ...] | None
    out_of_range_share: float
    non_finite_rows: int
    signals: dict[str, bool]
    params: DriftParams

    @property
    def detected(self) -> bool:
        return self.sufficient_data and any(self.signals.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "detected": self.detected,
            "signals": dict(self.signals),
            "sufficient_data": self.sufficient_data,
            "live_rows": self.live_rows,
            "drifted_share": round(self.drifted_share, 6),
            "prediction_shift": _round(self.prediction_shift),
            "out_of_range_share": round(self.out_of_range_share, 6),
            "non_finite_rows": self.non_finite_rows,
            "params": self.params.model_dump(),
            "groups": [
                {
                    "name": g.name,
                    "wasserstein": round(g.wasserstein, 6),
                    "psi": round(g.psi, 6),
                    "drifted_share": round(g.drifted_share, 6),
                }
                for g in self.groups
            ],
            "features": [
                {
                    "index": f.index,
                    "wasserstein": round(f.wasserstein, 6),
                    "psi": round(f.psi, 6),
                    "drifted": f.drifted,
                }
                for f in self.features
            ],
            "classes": {
                "reference": _round_list(self.reference_class_shares),
                "live": _round_list(self.live_class_shares),
            },
        }


def detect(
    reference: Reference,
    live_rows: npt.ArrayLike,
    live_labels: npt.ArrayLike | None,
    params: DriftParams,
) -> DriftResult:
    """Score every feature and the predicted classes; decide whether the inputs drifted."""
    live = np.asarray(live_rows, dtype=np.float32)
    if live.ndim != 2 or live.shape[1] != reference.features:
        raise ValueError(
            f"live sample has shape {live.shape}; the reference has {reference.features} features"
        )
    finite: npt.NDArray[np.bool_] = np.asarray(np.isfinite(live).all(axis=1))
    non_finite = int((~finite).sum())
    live = live[finite]  # a NaN row is a data-quality finding, not a drift score
    outside = (live < reference.low) | (live > reference.high)
    out_of_range = float(outside.any(axis=1).mean()) if len(live) else 0.0
    features = tuple(_score_feature(reference, live, j, params) for j in range(reference.features))
    scores = np.array([_statistic(f, params) for f in features])
    drifted_share = float((scores > params.threshold).mean()) if len(live) else 0.0
    prediction_shift, live_shares = _prediction_shift(reference, live_labels, finite)
    signals = {"features": drifted_share >= params.drifted_share}
    if prediction_shift is not None:
        signals["predictions"] = prediction_shift > params.prediction_threshold
    return DriftResult(
        live_rows=int(live.shape[0]),
        sufficient_data=live.shape[0] >= params.min_live_rows,
        features=features,
        groups=_groups(features, params),
        drifted_share=drifted_share,
        prediction_shift=prediction_shift,
        live_class_shares=live_shares,
        reference_class_shares=(
            None
            if reference.class_shares is None
            else tuple(float(x) for x in reference.class_shares)
        ),
        out_of_range_share=out_of_range,
        non_finite_rows=non_finite,
        signals=signals,
        params=params,
    )


def _score_feature(reference: Reference, live: Floats, j: int, params: DriftParams) -> FeatureScore:
    if live.shape[0] == 0:
        return FeatureScore(j, 0.0, 0.0, False)
    distance = float(wasserstein_distance(reference.rows[:, j], live[:, j]))
    normed = (
        0.0
        if distance == 0.0
        else distance / max(float(reference.std[j]), float(reference.std_floor[j]))
    )
    shares = _bin_shares(live[:, j], reference.edges[j])
    psi = _psi(reference.bin_shares[j], shares)
    score = normed if params.statistic == "wasserstein" else psi
    return FeatureScore(j, normed, psi, score > params.threshold)


def _statistic(feature: FeatureScore, params: DriftParams) -> float:
    return feature.wasserstein if params.statistic == "wasserstein" else feature.psi


def _bin_shares(
    values: npt.NDArray[Any], edges: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    shares: npt.NDArray[np.float64] = counts / max(1, int(counts.sum()))
    return shares


def _psi(expected: npt.NDArray[np.float64], actual: npt.NDArray[np.float64]) -> float:
    e = np.clip(expected, _PSI_EPSILON, None)
    a = np.clip(actual, _PSI_EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _prediction_shift(
    reference: Reference, live_labels: npt.ArrayLike | None, finite: npt.NDArray[np.bool_]
) -> tuple[float | None, tuple[float, ...] | None]:
    if live_labels is None or reference.class_shares is None:
        return None, None
    labels = np.asarray(live_labels, dtype=np.int64)[finite]
    if labels.size == 0:
        return None, None
    classes = len(reference.class_shares)
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"live predicted labels must be in 0..{classes - 1}")
    shares = np.bincount(labels, minlength=classes) / labels.size
    distance = float(jensenshannon(reference.class_shares, shares, base=2))
    return distance, tuple(float(x) for x in shares)


def _groups(features: tuple[FeatureScore, ...], params: DriftParams) -> tuple[GroupScore, ...]:
    """Contiguous, near-equal blocks of features, named by their index range (f00-f07)."""
    count = min(params.feature_groups, len(features))
    width = len(str(len(features) - 1))
    groups = []
    for block in np.array_split(np.arange(len(features)), count):
        members = [features[i] for i in block]
        scores = np.array([_statistic(f, params) for f in members])
        groups.append(
            GroupScore(
                name=f"f{block[0]:0{width}d}-f{block[-1]:0{width}d}",
                wasserstein=float(np.mean([f.wasserstein for f in members])),
                psi=float(np.mean([f.psi for f in members])),
                drifted_share=float((scores > params.threshold).mean()),
            )
        )
    return tuple(groups)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _round_list(values: tuple[float, ...] | None) -> list[float] | None:
    return None if values is None else [round(v, 6) for v in values]
