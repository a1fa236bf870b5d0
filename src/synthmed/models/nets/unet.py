"""A plain U-Net (Ronneberger et al. 2015): 3x3 double convolutions with ReLU, 2x2 max-pooling, channels
doubling per level, transposed-convolution upsampling and skip connections. Generic: any number of input
channels (4 MRI modalities, 3 RGB) and classes. Padded convolutions keep the input size; it must be
divisible by 2**depth."""

from __future__ import annotations

import torch
from torch import nn


def double_conv(cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in ((cin, cout), (cout, cout)):
        layers.append(nn.Conv2d(a, b, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, base_channels: int, depth: int, batch_norm: bool) -> None:
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ValueError(f"UNet: depth={depth} and base_channels={base_channels} must be >= 1")
        self.in_channels, self.out_channels, self.depth = in_channels, out_channels, depth
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([double_conv(in_channels, widths[0], batch_norm)])
        self.down.extend(double_conv(widths[i], widths[i + 1], batch_norm) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth)))
        self.merge = nn.ModuleList(double_conv(2 * widths[i], widths[i], batch_norm) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2**self.depth
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"UNet input {tuple(x.shape[-2:])} must be divisible by 2**depth = {factor}")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
