"""The networks a model's params can choose (`model.family`), behind one builder.

Every network takes raw inputs [N, features] and normalises them itself (a `Normaliser` whose
shift and scale are buffers of the module), so the exported ONNX graph takes exactly what
clients send and no preprocessing is duplicated between training and serving. Each family lives
in its own module so that a model's pipeline depends on the code of its family only (editing the
MLP does not retrain the CNN models).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ml.config import CnnParams, MlpParams
from ml.schema import ImageInput, InputSchema, TabularInput

Network = nn.Module


class Normaliser(nn.Module):
    """(x - shift) / scale per feature, with the statistics stored in the module's state."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return (rows - self.shift) / self.scale


def normalisation_stats(
    schema: ImageInput | TabularInput, train_X: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) per feature for the schema's normalisation, fitted on the train split."""
    features = schema.feature_count
    if schema.normalisation == "range":
        low, high = schema.bounds()
        return low, high - low
    if schema.normalisation == "standardize":
        mean = train_X.astype(np.float64).mean(axis=0)
        std = train_X.astype(np.float64).std(axis=0)
        # a constant feature carries no information; dividing by 1 keeps it finite
        return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)
    return np.zeros(features, np.float32), np.ones(features, np.float32)


class ServingHead(nn.Module):
    """What gets exported: probabilities and the predicted label, the service's two outputs."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.network(rows), dim=1)
        return probabilities, probabilities.argmax(dim=1)


def build_network(
    params: CnnParams | MlpParams, schema: InputSchema, num_classes: int
) -> nn.Module:
    """The network of `model.family` for this input schema and number of classes."""
    if isinstance(params, CnnParams):
        from ml.networks.cnn import ImageCNN

        if not isinstance(schema, ImageInput):
            raise ValueError("model.family cnn needs input.kind image")
        return ImageCNN(params, schema, num_classes)
    from ml.networks.mlp import MLP

    return MLP(params, schema.feature_count, num_classes)


def set_normalisation(network: nn.Module, shift: np.ndarray, scale: np.ndarray) -> None:
    normaliser = network.get_submodule("normalise")
    assert isinstance(normaliser, Normaliser)
    normaliser.shift.copy_(torch.from_numpy(np.asarray(shift, dtype=np.float32)))
    normaliser.scale.copy_(torch.from_numpy(np.asarray(scale, dtype=np.float32)))
