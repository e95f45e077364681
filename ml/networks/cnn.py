"""A small CNN for single-channel images (`model.family: cnn`), taking raw rows [N, height*width].

Each width is a 3x3 conv + ReLU followed by 2x2 max-pooling, which halves the image (8x8 -> 4x4
-> 2x2): the second conv on 4x4 costs a quarter of one on 8x8, and over six seeds the digits
accuracy stayed within the spread between seeds (`make seed-sweep`, docs/MODELS.md).
"""

from __future__ import annotations

import torch
from torch import nn

from ml.config import CnnParams
from ml.networks import Normaliser
from ml.schema import ImageInput


class ImageCNN(nn.Module):
    def __init__(self, params: CnnParams, schema: ImageInput, num_classes: int) -> None:
        super().__init__()
        self.height, self.width = schema.shape
        self.normalise = Normaliser(schema.feature_count)
        layers: list[nn.Module] = []
        channels, height, width = 1, self.height, self.width
        for out_channels in params.channels:
            layers += [nn.Conv2d(channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))
            height, width, channels = height // 2, width // 2, out_channels
        if height < 1 or width < 1:
            raise ValueError(
                f"{len(params.channels)} pooled conv layers shrink a {self.height}x{self.width}"
                " image to nothing: use fewer model.channels"
            )
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * width, params.hidden),
            nn.ReLU(),
            nn.Dropout(params.dropout),
            nn.Linear(params.hidden, num_classes),
        )

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Raw rows [N, height*width] -> logits [N, num_classes]."""
        images = self.normalise(rows).reshape(-1, 1, self.height, self.width)
        logits: torch.Tensor = self.classifier(self.features(images))
        return logits
