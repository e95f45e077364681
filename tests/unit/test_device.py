"""The CUDA code paths, checked on a CPU: device choice and the precision plan a GPU would get."""

from __future__ import annotations

import pytest
import torch

from ml.config import load_params
from ml.data import Split
from ml.device import PrecisionPlan, precision_plan, resolve_device, seed_everything
from ml.networks import build_network
from ml.stages.train import make_loader, train_one_epoch
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("requested", "cuda", "expected"),
    [
        ("auto", True, "cuda"),
        ("auto", False, "cpu"),
        ("cpu", True, "cpu"),
        ("cuda:1", True, "cuda:1"),
    ],
)
def test_resolve_device(requested: str, cuda: bool, expected: str) -> None:
    assert resolve_device(requested, cuda_available=cuda) == torch.device(expected)


def test_explicit_cuda_without_cuda_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda", cuda_available=False)


def test_auto_uses_what_this_machine_has() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cuda_plan_uses_fp16_autocast_scaling_and_pinned_memory() -> None:
    plan = precision_plan(torch.device("cuda"), amp=True)
    assert plan == PrecisionPlan(True, torch.float16, True, True, True)
    assert precision_plan(torch.device("cuda"), amp=False).autocast_enabled is False


def test_cpu_plan_stays_fp32_without_pinning() -> None:
    plan = precision_plan(torch.device("cpu"), amp=True)
    assert not plan.autocast_enabled and not plan.grad_scaling and not plan.pin_memory


def test_autocast_training_step_runs(tmp_path: object) -> None:
    """The autocast branch of the loop (fp16 on CUDA) exercised with CPU bf16 autocast."""
    params = load_params(REPO / "models/digits/params.yaml", REPO / "params.yaml")
    generator = seed_everything(0)
    model = build_network(params.model, params.input, 10)
    plan = PrecisionPlan(True, torch.bfloat16, False, False, False)
    X = torch.rand(64, 64) * 16
    y = torch.randint(0, 10, (64,))
    loader = make_loader(Split(X.numpy(), y.numpy()), 16, plan, True, generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss = train_one_epoch(model, loader, optimizer, scaler, torch.device("cpu"), plan)
    assert 0 < loss < 10
