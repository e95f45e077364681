"""Synthetic input shifts: what `make drift` and the detector's tests feed it, each one a plausible
production failure. Values are shifted within each feature's declared range [low, high] (the
model's input schema), so they apply to images and tabular features alike.

| shift | what it simulates | documented magnitude (detected >= 95% on the digits) |
| --- | --- | --- |
| `darker` | lower gain: an under-exposed camera, a sensor low | (x - low) x 0.9 |
| `brighter` | higher gain: over-exposure, a unit change | (x - low) x 1.3, clipped at high |
| `noise` | sensor noise, lossy compression | Gaussian, sd 0.05 x (high - low) |
| `translate` | cropping/centering changed upstream (images only) | one pixel to the right |
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
    bounds: float | tuple[npt.ArrayLike, npt.ArrayLike],
    magnitude: float | None = None,
    image_shape: tuple[int, int] | None = None,
) -> tuple[Floats, Labels]:
    """Return shifted copies of (rows, labels), kept within `bounds`: (low, high), per feature
    or for all, or a single number meaning (0, that number). `translate` needs an image: its
    `image_shape` (height, width), else a square image is assumed."""
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; expected one of {', '.join(SHIFTS)}")
    x = np.asarray(rows, dtype=np.float32).copy()
    y = np.asarray(labels, dtype=np.int64).copy()
    low, high = (0.0, bounds) if isinstance(bounds, (int, float)) else bounds
    lo = np.broadcast_to(np.asarray(low, dtype=np.float32), x.shape[1:])
    hi = np.broadcast_to(np.asarray(high, dtype=np.float32), x.shape[1:])
    amount = DEFAULT_MAGNITUDE[shift] if magnitude is None else float(magnitude)
    transforms: dict[str, Callable[[], tuple[Floats, Labels]]] = {
        "none": lambda: (x, y),
        "darker": lambda: (lo + (x - lo) * amount, y),
        "brighter": lambda: (lo + (x - lo) * amount, y),
        "noise": lambda: (
            x + rng.normal(0.0, 1.0, x.shape).astype(np.float32) * amount * (hi - lo),
            y,
        ),
        "translate": lambda: (_translate(x, int(amount), image_shape), y),
        "classes": lambda: _only_classes(x, y, int(amount), rng),
    }
    shifted, kept = transforms[shift]()
    return np.clip(shifted, lo, hi).astype(np.float32), kept


def _translate(x: Floats, pixels: int, image_shape: tuple[int, int] | None) -> Floats:
    if image_shape is None:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ValueError(
                f"translate needs images; {x.shape[1]} features is not a square (tabular input?)"
            )
        image_shape = (side, side)
    height, width = image_shape
    if height * width != x.shape[1]:
        raise ValueError(f"translate: {x.shape[1]} features is not a {height}x{width} image")
    images = x.reshape(-1, height, width)
    out = np.zeros_like(images)
    if pixels >= 0:
        out[:, :, pixels:] = images[:, :, : width - pixels]
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
