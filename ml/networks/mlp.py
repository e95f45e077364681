"""A multi-layer perceptron for any flat input (`model.family: mlp`), taking raw rows [N, F]."""

from __future__ import annotations

import torch
from torch import nn

from ml.config import MlpParams
from ml.networks import Normaliser


class MLP(nn.Module):
    def __init__(self, params: MlpParams, features: int, num_classes: int) -> None:
        super().__init__()
        self.normalise = Normaliser(features)
        layers: list[nn.Module] = []
        width = features
        for hidden in params.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(params.dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(self.normalise(rows))
        return logits
