"""The colonoscopy study's lesion CNN: three conv blocks (5x5 conv, ReLU, 2x2 max-pool), dense 512, output."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LesionCNN(nn.Module):
    """Frames (B, in_channels, S, S) -> class logits (B, num_classes)."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        channels: Sequence[int],
        kernel_size: int,
        hidden: int,
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, previous = int(image_size), in_channels
        for width in channels:
            layers += [nn.Conv2d(previous, width, kernel_size, padding=kernel_size // 2), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            previous, size = width, size // 2
        if size < 1:
            raise ValueError(f"image_size={image_size} is too small for {len(channels)} pooling stages")
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(previous * size * size, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
