"""The train stage's checkpoint: written byte for byte the same for the same weights, loaded back
into the network by evaluate and export.

The payload carries everything it takes to rebuild the network (family and its params, the input
schema, the number of classes; the normalisation statistics are buffers of the state dict), so
later stages never guess.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn

from ml.cli import StageError
from ml.config import ModelParams
from ml.io import write_bytes
from ml.networks import build_network
from ml.schema import InputSchema

_MODEL_PARAMS: TypeAdapter[Any] = TypeAdapter(ModelParams)
_INPUT_SCHEMA: TypeAdapter[Any] = TypeAdapter(InputSchema)


def save_checkpoint(path: Path, network: nn.Module, payload: dict[str, Any]) -> None:
    """torch.save into memory, then one atomic write: saved straight to a temporary file, torch
    records that file's random name inside the archive and the bytes differ on every run."""
    buffer = io.BytesIO()
    torch.save({**payload, "state_dict": network.state_dict()}, buffer)
    write_bytes(path, buffer.getvalue())


def checkpoint_payload(
    model_params: ModelParams, schema: InputSchema, num_classes: int
) -> dict[str, Any]:
    return {
        "model_params": model_params.model_dump(mode="json"),
        "input": schema.model_dump(mode="json"),
        "num_classes": num_classes,
    }


def load_checkpoint(path: str | Path) -> nn.Module:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        network = build_network(
            _MODEL_PARAMS.validate_python(payload["model_params"]),
            _INPUT_SCHEMA.validate_python(payload["input"]),
            num_classes=int(payload["num_classes"]),
        )
        network.load_state_dict(payload["state_dict"])
    except FileNotFoundError:
        raise StageError(f"{path}: checkpoint missing (run the train stage first)") from None
    except (
        OSError,
        RuntimeError,
        KeyError,
        TypeError,
        ValueError,
        ValidationError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        struct.error,
        EOFError,
    ) as error:
        raise StageError(f"{path}: unreadable checkpoint: {error}") from None
    return network.eval()


@torch.no_grad()
def predict_proba(network: nn.Module, X: "torch.Tensor") -> "torch.Tensor":
    return torch.softmax(network(X), dim=1)
