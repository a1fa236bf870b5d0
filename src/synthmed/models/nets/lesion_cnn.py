"""The colonoscopy study's lesion CNN: three conv blocks (5x5 conv, ReLU, 2x2 max-pool), dense 512, output.

Knobs that are not in the study (docs/render.md, "What the varied frames cost"): `convs` per block (the
study: 1), `batch_norm` puts a BatchNorm after each conv, and `pool` chooses what the dense head sees: `flatten` (the study) every position
of the last feature map, `max` or `avg` each channel pooled over the whole frame, so a lesion is found
wherever it sits and the head's size no longer grows with the input; `mask_head` adds a 1x1 conv on the last
feature map that scores, per cell, whether the lesion lies there (trained by the classifier's `mask_weight`
against the rendered mask, which costs nothing to label)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

POOLS = ("flatten", "max", "avg")


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
        convs: int,
        batch_norm: bool,
        pool: str,
        mask_head: bool,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"model.net.pool={pool!r}; expected one of {POOLS}")
        layers: list[nn.Module] = []
        size, previous = int(image_size), in_channels
        if int(convs) < 1:
            raise ValueError(f"model.net.convs={convs}: at least one conv per block")
        for width in channels:
            for _ in range(int(convs)):
                layers.append(nn.Conv2d(previous, width, kernel_size, padding=kernel_size // 2, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU(inplace=True))
                previous = width
            layers.append(nn.MaxPool2d(2))
            size //= 2
        if size < 1:
            raise ValueError(f"image_size={image_size} is too small for {len(channels)} pooling stages")
        self.features = nn.Sequential(*layers)
        if pool == "flatten":
            reduce, inputs = nn.Flatten(), previous * size * size
        else:
            pooling = nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1)
            reduce, inputs = nn.Sequential(pooling, nn.Flatten()), previous
        self.head = nn.Sequential(
            reduce, nn.Linear(inputs, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, num_classes),
        )
        self.mask_head = nn.Conv2d(previous, 1, 1) if mask_head else None

    def forward_with_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, num_classes) and mask logits (B, S / 2^stages, S / 2^stages) from one pass."""
        if self.mask_head is None:
            raise ValueError("model.net.mask_head=false: this net has no mask head (set model.net.mask_head=true)")
        features = self.features(x)
        return self.head(features), self.mask_head(features)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
