"""train: fit the CNN on the train split with early stopping on validation loss, tracked in MLflow.

Device `auto` picks CUDA when present; on CUDA the loop uses fp16 autocast with gradient scaling and
pinned host memory (see ml/device.py). Seeds and deterministic kernels make a CPU run repeatable.
"""

from __future__ import annotations

import copy
import csv
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from ml.cli import run_stage, stage_parser
from ml.config import Params, load_params
from ml.data import Split, load_split
from ml.device import PrecisionPlan, precision_plan, resolve_device, seed_everything
from ml.io import atomic_path, write_json
from ml.model import DigitsCNN, build_model


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float


def make_loader(
    split: Split, batch_size: int, plan: PrecisionPlan, shuffle: bool, generator: torch.Generator
) -> DataLoader[tuple[torch.Tensor, ...]]:
    dataset = TensorDataset(torch.from_numpy(split.X), torch.from_numpy(split.y))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        pin_memory=plan.pin_memory,
    )


def _autocast(device: torch.device, plan: PrecisionPlan) -> Any:
    if not plan.autocast_enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=plan.autocast_dtype)


def _batches(
    loader: DataLoader[tuple[torch.Tensor, ...]], device: torch.device, plan: PrecisionPlan
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for X, y in loader:
        yield X.to(device, non_blocking=plan.non_blocking), y.to(
            device, non_blocking=plan.non_blocking
        )


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, ...]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    plan: PrecisionPlan,
) -> float:
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    for X, y in _batches(loader, device, plan):
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, plan):
            loss = loss_fn(model(X), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach()) * len(y)
        count += len(y)
    return total / max(count, 1)


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, ...]],
    device: torch.device,
    plan: PrecisionPlan,
) -> tuple[float, float]:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, correct, count = 0.0, 0, 0
    for X, y in _batches(loader, device, plan):
        with _autocast(device, plan):
            logits = model(X)
        total += float(loss_fn(logits.float(), y))
        correct += int((logits.argmax(dim=1) == y).sum())
        count += len(y)
    return total / max(count, 1), correct / max(count, 1)


def fit(
    params: Params, train: Split, val: Split, device: torch.device, progress: bool = True
) -> tuple[DigitsCNN, list[EpochRecord]]:
    """Train with early stopping; returns the model at its best validation loss and the history."""
    generator = seed_everything(params.seed)
    plan = precision_plan(device, params.train.amp)
    model = build_model(params.model, params.data.num_classes, params.data.pixel_max).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.train.learning_rate, weight_decay=params.train.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=plan.grad_scaling)
    train_loader = make_loader(train, params.train.batch_size, plan, True, generator)
    val_loader = make_loader(val, 1024, plan, False, generator)
    best_loss, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    history: list[EpochRecord] = []
    bar = tqdm(range(1, params.train.epochs + 1), desc="train", unit="epoch", disable=not progress)
    for epoch in bar:
        train_loss = train_one_epoch(model, train_loader, optimizer, scaler, device, plan)
        val_loss, val_accuracy = evaluate_loss(model, val_loader, device, plan)
        history.append(EpochRecord(epoch, train_loss, val_loss, val_accuracy))
        bar.set_postfix(
            loss=f"{train_loss:.3f}", val_loss=f"{val_loss:.3f}", val_acc=f"{val_accuracy:.3f}"
        )
        if val_loss < best_loss - 1e-4:
            best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= params.train.patience:
                break
    model.load_state_dict(best_state)
    return model.cpu().eval(), history


def save_checkpoint(path: Path, model: DigitsCNN, params: Params) -> None:
    """The checkpoint carries all it takes to rebuild the model, so later stages never guess."""
    payload = {
        "state_dict": model.state_dict(),
        "model_params": params.model.model_dump(),
        "num_classes": params.data.num_classes,
        "pixel_max": params.data.pixel_max,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def write_history(path: Path, history: list[EpochRecord]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "train_loss", "val_loss", "val_accuracy"])
        for r in history:
            writer.writerow(
                [r.epoch, f"{r.train_loss:.6f}", f"{r.val_loss:.6f}", f"{r.val_accuracy:.6f}"]
            )


def _main(argv: Sequence[str] | None) -> None:
    parser = stage_parser(__doc__ or "train")
    parser.add_argument("--data", required=True, help="directory with the prepared splits")
    parser.add_argument("--model", required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--run-info", required=True, help="JSON with the MLflow run id")
    parser.add_argument("--history", required=True, help="per-epoch CSV for dvc plots")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    device = resolve_device(params.train.device)
    train, val = load_split(args.data, "train"), load_split(args.data, "val")

    import mlflow

    from ml.tracking import flatten, start_tracking

    experiment_id = start_tracking()
    started = time.perf_counter()
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(flatten(params.model_dump()))
        mlflow.set_tag("device", str(device))
        model, history = fit(params, train, val, device)
        for r in history:
            mlflow.log_metrics(
                {
                    "train_loss": r.train_loss,
                    "val_loss": r.val_loss,
                    "val_accuracy": r.val_accuracy,
                },
                step=r.epoch,
            )
        save_checkpoint(Path(args.model), model, params)
        write_history(Path(args.history), history)
        mlflow.log_artifact(args.model, artifact_path="checkpoint")
        run_id = run.info.run_id
    best = min(history, key=lambda r: r.val_loss)
    write_json(
        args.run_info,
        {
            "run_id": run_id,
            "experiment_id": experiment_id,
            "epochs_run": len(history),
            "best_epoch": best.epoch,
            "device": str(device),
        },
    )
    print(
        f"train: {len(history)} epochs on {device} in {time.perf_counter() - started:.1f}s;"
        f" best epoch {best.epoch} val_acc {best.val_accuracy:.4f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("train", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
