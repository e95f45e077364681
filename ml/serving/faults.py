"""Fault injection for canary rehearsals: errors, latency and a degraded model, all off by default.

Errors are spaced deterministically (an accumulator adds ``error_rate`` per request and fails the
request each time it crosses 1), so any window of requests sees the configured rate exactly: a
rehearsal's verdict cannot flip because a random number generator had a lucky streak.
Degradation acts on the input, like a broken preprocessing step would:
- ``shuffle`` permutes every row's pixels with one fixed derangement: predictions turn mostly
  wrong, confidence drops and the predicted-class mix skews, while the input's scaled mean
  (the drift metric) of an image is unchanged, so only model-quality analyses can catch it;
- ``constant`` replaces every row by a blank image: one constant prediction for everything.
"""

from __future__ import annotations

import numpy as np

from ml.serving.config import FaultConfig
from ml.serving.model import Floats

_PERMUTATION_SEED = 20240101


class FaultInjector:
    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self.latency_s = config.latency_ms / 1000.0
        self._error_due = 0.0
        self._permutations: dict[int, np.ndarray] = {}

    @property
    def active(self) -> bool:
        return self.config.active

    def should_fail(self) -> bool:
        """True for exactly ``error_rate`` of the calls, evenly spread."""
        if self.config.error_rate <= 0.0:
            return False
        self._error_due += self.config.error_rate
        if self._error_due >= 1.0 - 1e-9:
            self._error_due -= 1.0
            return True
        return False

    def degrade(self, rows: Floats) -> Floats:
        mode = self.config.degrade
        if mode == "shuffle":
            return rows[:, self._permutation(rows.shape[1])]
        if mode == "constant":
            return np.zeros_like(rows)
        return rows

    def _permutation(self, features: int) -> np.ndarray:
        permutation = self._permutations.get(features)
        if permutation is None:
            # one cycle through a random order: a derangement, no pixel stays where it was
            order = np.random.default_rng(_PERMUTATION_SEED).permutation(features)
            permutation = np.empty(features, dtype=np.intp)
            permutation[order] = np.roll(order, -1)
            self._permutations[features] = permutation
        return permutation
