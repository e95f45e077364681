"""Device and precision choices for training, written so the CUDA paths are testable on a CPU.

`resolve_device` and `precision_plan` are pure functions of what is requested and what the
machine offers, so tests pass `cuda_available=True` and check the plan a GPU runner would get.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch


def resolve_device(requested: str, cuda_available: bool | None = None) -> torch.device:
    """auto -> cuda when available else cpu; an explicit cuda request without CUDA is an error."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if requested == "auto":
        return torch.device("cuda" if available else "cpu")
    if requested.startswith("cuda") and not available:
        raise RuntimeError(f"train.device={requested} but CUDA is not available on this machine")
    return torch.device(requested)


@dataclass(frozen=True)
class PrecisionPlan:
    """How one training step runs on a device: autocast dtype, gradient scaling, host pinning."""

    autocast_enabled: bool
    autocast_dtype: torch.dtype
    grad_scaling: bool
    pin_memory: bool
    non_blocking: bool


def precision_plan(device: torch.device, amp: bool) -> PrecisionPlan:
    # fp16 autocast + GradScaler is the standard CUDA recipe; on CPU we keep full fp32, because
    # bf16 autocast on CPU is slower than fp32 for a model this small and changes results.
    on_cuda = device.type == "cuda"
    return PrecisionPlan(
        autocast_enabled=amp and on_cuda,
        autocast_dtype=torch.float16 if on_cuda else torch.bfloat16,
        grad_scaling=amp and on_cuda,
        pin_memory=on_cuda,
        non_blocking=on_cuda,
    )


def seed_everything(seed: int) -> torch.Generator:
    """Seed every generator and ask torch for deterministic kernels (CUDA needs the env var)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
