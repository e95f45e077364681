"""Load the train stage's checkpoint back into a model (used by evaluate and export)."""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import torch

from ml.cli import StageError
from ml.config import ModelParams
from ml.model import DigitsCNN, build_model


def load_checkpoint(path: str | Path) -> DigitsCNN:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(
            ModelParams.model_validate(payload["model_params"]),
            num_classes=int(payload["num_classes"]),
            pixel_max=float(payload["pixel_max"]),
        )
        model.load_state_dict(payload["state_dict"])
    except FileNotFoundError:
        raise StageError(f"{path}: checkpoint missing (run the train stage first)") from None
    except (
        OSError,
        RuntimeError,
        KeyError,
        TypeError,
        ValueError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        struct.error,
        EOFError,
    ) as error:
        raise StageError(f"{path}: unreadable checkpoint: {error}") from None
    return model.eval()


@torch.no_grad()
def predict_proba(model: DigitsCNN, X: "torch.Tensor") -> "torch.Tensor":
    return torch.softmax(model(X), dim=1)
