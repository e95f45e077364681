"""train: fit the model's network (`model.family`) on the train split with early stopping on
validation loss, tracked in MLflow under the model's experiment.

The normalisation statistics the schema asks for are fitted on the train split and stored in the
network (the exported graph applies them). Device `auto` picks CUDA when present; on CUDA the loop
uses fp16 autocast with gradient scaling and pinned host memory (see ml/device.py). Seeds and
deterministic kernels make a CPU run repeatable.
"""

from __future__ import annotations

import copy
import sys
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

from ml.catalog import load_catalog
from ml.checkpoint import checkpoint_payload, save_checkpoint
from ml.cli import StageError, add_catalog_options, run_stage, stage_parser
from ml.config import Params, load_params
from ml.data import Split, load_split
from ml.device import PrecisionPlan, precision_plan, resolve_device, seed_everything
from ml.io import atomic_path, sha256_file
from ml.networks import build_network, normalisation_stats, set_normalisation


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
) -> tuple[nn.Module, list[EpochRecord]]:
    """Train with early stopping; returns the model at its best validation loss and the history."""
    generator = seed_everything(params.seed)
    plan = precision_plan(device, params.train.amp)
    try:
        model = build_network(params.model, params.input, params.task.num_classes)
    except ValueError as error:  # a family that cannot take this input (e.g. too many pools)
        raise StageError(f"model: {error}") from None
    set_normalisation(model, *normalisation_stats(params.input, train.X))
    model = model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.train.learning_rate, weight_decay=params.train.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=plan.grad_scaling)
    train_loader = make_loader(train, params.train.batch_size, plan, True, generator)
    val_loader = make_loader(val, 1024, plan, False, generator)
    best_loss, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    history: list[EpochRecord] = []
    # a bar only on a terminal: in CI logs and under `dvc repro` it is thousands of lines
    show = progress and sys.stderr.isatty()
    bar = tqdm(range(1, params.train.epochs + 1), desc="train", unit="epoch", disable=not show)
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
    parser.add_argument("--history", required=True, help="per-epoch CSV for dvc plots")
    add_catalog_options(parser)
    args = parser.parse_args(argv)
    params = load_params(args.params, args.shared_params)
    catalog = load_catalog(args.catalog)
    entry = catalog.get(args.name)
    try:
        device = resolve_device(params.train.device)
    except RuntimeError as error:  # cuda asked for where there is none: a message, no traceback
        raise StageError(f"{args.params}: {error}") from None
    train, val = load_split(args.data, "train"), load_split(args.data, "val")

    import mlflow

    from ml.tracking import (
        CHECKPOINT_TAG,
        EXPERIMENT_TAG,
        MODEL_TAG,
        at_store_root,
        dvc_experiment,
        flatten,
        start_tracking,
        store_root,
    )

    root = store_root(catalog.root)
    experiment_id = start_tracking(entry.experiment, root)
    started = time.perf_counter()
    checkpoint = Path(args.model).resolve()  # MLflow calls run at the store root
    with mlflow.start_run(experiment_id=experiment_id):
        mlflow.log_params(flatten(params.model_dump(mode="json")))
        tags = {"device": str(device), MODEL_TAG: entry.name}
        if dvc_experiment():
            tags[EXPERIMENT_TAG] = str(dvc_experiment())
        mlflow.set_tags(tags)
        # a sign of life before the longest step (and where a test's Ctrl-C aims)
        print(
            f"train: fitting on {device}, {len(train.y)} rows, up to {params.train.epochs} epochs",
            flush=True,
        )
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
        payload = checkpoint_payload(params.model, params.input, params.task.num_classes)
        save_checkpoint(Path(args.model), model, payload)
        write_history(Path(args.history), history)
        # evaluate and register find this run by the checkpoint's content (ml/tracking.py)
        mlflow.set_tag(CHECKPOINT_TAG, sha256_file(args.model))
        with at_store_root(root):
            mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")
    best = min(history, key=lambda r: r.val_loss)
    print(
        f"train: {len(history)} epochs on {device} in {time.perf_counter() - started:.1f}s;"
        f" best epoch {best.epoch} val_acc {best.val_accuracy:.4f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("train", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
