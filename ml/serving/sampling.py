"""A bounded, uniform sample of the inputs the service answered, for the drift monitor.

The drift job (ml/monitoring) compares live inputs with the training data. Keeping every input
would grow without bound, and summarising each feature per request would cost microseconds on
the hot path, so each window keeps a reservoir of at most ``capacity`` rows (Vitter's
Algorithm L, with Li's skip distances): once the reservoir is full, the per-request cost is one
integer addition and one comparison, and only the ~capacity * ln(n / capacity) rows chosen to
replace a slot touch numpy. Memory is fixed: two windows x capacity x features float32
(2 x 1024 x 64 x 4 B = 512 KiB by default).

Windows: the current window rotates into ``previous`` once ``window_s`` seconds have passed,
checked against the request's own start time (no extra clock read). A snapshot returns both,
each with the number of rows it saw, so a reader merges windows and pods in proportion to the
traffic they represent (ml.monitoring.live.merge_samples).

Like the metrics, the sampler is only touched from the event-loop thread: no locks.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass
class _Window:
    rows: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    seen: int
    started: float  # the server's perf_counter() clock
    started_unix: float


class InputSampler:
    """Uniform reservoir sample of rows (and their predicted labels) per time window."""

    __slots__ = (
        "capacity",
        "features",
        "window_s",
        "_rng",
        "_current",
        "_previous",
        "_stored",
        "_next_index",
        "_w",
        "_rotate_at",
        "_clock_offset",
    )

    def __init__(
        self,
        capacity: int,
        features: int,
        window_s: float,
        now: float,
        now_unix: float,
        seed: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.capacity = capacity
        self.features = features
        self.window_s = window_s
        self._rng = random.Random(seed)
        # unix time = perf_counter time + offset: windows are reported in wall-clock time
        self._clock_offset = now_unix - now
        self._previous: _Window | None = None
        self._current = self._new_window(now)
        self._stored = 0
        self._next_index = 0
        self._w = 1.0
        self._rotate_at = now + window_s

    def _new_window(self, now: float) -> _Window:
        return _Window(
            rows=np.empty((self.capacity, self.features), dtype=np.float32),
            labels=np.empty(self.capacity, dtype=np.int64),
            seen=0,
            started=now,
            started_unix=now + self._clock_offset,
        )

    def offer(
        self, rows: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], now: float
    ) -> None:
        """Consider a batch of answered rows; ``now`` is the request's start (perf_counter)."""
        if now >= self._rotate_at:
            self._rotate(now)
        window = self._current
        start = window.seen
        window.seen = start + rows.shape[0]
        if window.seen <= self._next_index:  # the common case once the reservoir is full
            return
        self._admit(window, rows, labels, start)

    def _admit(
        self,
        window: _Window,
        rows: npt.NDArray[np.float32],
        labels: npt.NDArray[np.int64],
        start: int,
    ) -> None:
        end = window.seen
        if self._stored < self.capacity:  # filling: keep every row
            take = min(self.capacity - self._stored, end - start)
            window.rows[self._stored : self._stored + take] = rows[:take]
            window.labels[self._stored : self._stored + take] = labels[:take]
            self._stored += take
            if self._stored < self.capacity:
                self._next_index = end
                return
            self._w = math.exp(math.log(self._random()) / self.capacity)
            self._next_index = start + take + self._skip()
        while self._next_index < end:  # Algorithm L: the next row to keep replaces a random slot
            slot = self._rng.randrange(self.capacity)
            offset = self._next_index - start
            window.rows[slot] = rows[offset]
            window.labels[slot] = labels[offset]
            self._w *= math.exp(math.log(self._random()) / self.capacity)
            self._next_index += 1 + self._skip()

    def _skip(self) -> int:
        """Rows to pass over before the next one kept (geometric with parameter w)."""
        if self._w >= 1.0:
            return 0
        if self._w <= 0.0:  # underflow after ~1e308 rows: nothing more is ever kept
            return 1 << 62
        return int(math.floor(math.log(self._random()) / math.log1p(-self._w)))

    def _random(self) -> float:
        # random() is in [0, 1); log(0) is undefined, so draw from (0, 1)
        return self._rng.random() or 5e-324

    def _rotate(self, now: float) -> None:
        windows_passed = math.floor((now - self._rotate_at) / self.window_s) + 1
        # a window that ended more than one window ago holds no recent rows: drop it
        self._previous = self._current if windows_passed == 1 else None
        start = self._rotate_at + (windows_passed - 1) * self.window_s
        self._current = self._new_window(start)
        self._rotate_at = start + self.window_s
        self._stored = 0
        self._next_index = 0
        self._w = 1.0

    def snapshot(self, now: float) -> dict[str, Any]:
        """Both windows (previous first) as plain data: rows, labels, rows seen, start/end time."""
        if now >= self._rotate_at:
            self._rotate(now)
        windows = []
        for window, end in (
            (self._previous, self._current.started),
            (self._current, now),
        ):
            if window is None:
                continue
            kept = min(window.seen, self.capacity)
            windows.append(
                {
                    "seen": window.seen,
                    "start_unix": round(window.started_unix, 3),
                    "end_unix": round(end + self._clock_offset, 3),
                    "rows": window.rows[:kept],
                    "labels": window.labels[:kept],
                }
            )
        return {"capacity": self.capacity, "window_s": self.window_s, "windows": windows}
