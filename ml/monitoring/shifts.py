"""Synthetic input shifts of square images (the digits are 8x8): what `make drift` and the
detector's tests feed it, each one a plausible production failure.

| shift | what it simulates | documented magnitude (detected >= 95%) |
| --- | --- | --- |
| `darker` | under-exposed camera, lower gain | pixels x 0.9 |
| `brighter` | over-exposed camera | pixels x 1.3 (clipped at pixel_max) |
| `noise` | sensor noise, lossy compression | Gaussian, sd 0.05 x pixel_max |
| `translate` | cropping/centering changed upstream | one pixel to the right |
| `classes` | a different user population | only 3 of the classes arrive |

`none` is the identity: a fresh sample of the training distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]

SHIFTS = ("none", "darker", "brighter", "noise", "translate", "classes")
DEFAULT_MAGNITUDE = {
    "none": 0.0,
    "darker": 0.9,
    "brighter": 1.3,
    "noise": 0.05,
    "translate": 1.0,
    "classes": 3.0,
}


def apply_shift(
    rows: npt.ArrayLike,
    labels: npt.ArrayLike,
    shift: str,
    rng: np.random.Generator,
    pixel_max: float,
    magnitude: float | None = None,
) -> tuple[Floats, Labels]:
    """Return shifted copies of (rows, labels); pixels stay within [0, pixel_max]."""
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; expected one of {', '.join(SHIFTS)}")
    x = np.asarray(rows, dtype=np.float32).copy()
    y = np.asarray(labels, dtype=np.int64).copy()
    amount = DEFAULT_MAGNITUDE[shift] if magnitude is None else float(magnitude)
    transforms: dict[str, Callable[[], tuple[Floats, Labels]]] = {
        "none": lambda: (x, y),
        "darker": lambda: (x * amount, y),
        "brighter": lambda: (x * amount, y),
        "noise": lambda: (x + rng.normal(0.0, amount * pixel_max, x.shape).astype(np.float32), y),
        "translate": lambda: (_translate(x, int(amount)), y),
        "classes": lambda: _only_classes(x, y, int(amount), rng),
    }
    shifted, kept = transforms[shift]()
    return np.clip(shifted, 0.0, pixel_max).astype(np.float32), kept


def _translate(x: Floats, pixels: int) -> Floats:
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        raise ValueError(f"translate needs square images; {x.shape[1]} features is not a square")
    images = x.reshape(-1, side, side)
    out = np.zeros_like(images)
    if pixels >= 0:
        out[:, :, pixels:] = images[:, :, : side - pixels]
    else:
        out[:, :, :pixels] = images[:, :, -pixels:]
    return out.reshape(x.shape)


def _only_classes(
    x: Floats, y: Labels, count: int, rng: np.random.Generator
) -> tuple[Floats, Labels]:
    """Resample (with replacement, same size) from `count` randomly chosen classes only."""
    chosen = rng.choice(np.unique(y), size=count, replace=False)
    pool = np.flatnonzero(np.isin(y, chosen))
    pick = rng.choice(pool, size=len(y), replace=True)
    return x[pick], y[pick]
