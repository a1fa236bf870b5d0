"""DCGAN networks for tumour label maps: a noise-to-map generator and a map-to-logit discriminator.

Plain `nn.Module`s; the losses and the training loop live in `synthmed.models.dcgan`.

Both networks are built for a square power-of-two `image_size` (>= 8). The generator projects z to a
4x4 feature map with one transposed convolution and then doubles the resolution log2(image_size / 4)
times (transposed conv 4x4 / stride 2 + batch norm + ReLU; the last stage has no norm and emits
logits). The discriminator mirrors it (conv 4x4 / stride 2 + batch norm + LeakyReLU(0.2), no norm on
the first stage as in the DCGAN paper) down to 4x4, then one 4x4 convolution to a single logit
(optionally with a minibatch-standard-deviation channel appended at 4x4).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _num_stages(image_size: int) -> int:
    """Number of stride-2 stages between 4x4 and `image_size` (128 -> 5, 64 -> 4, 32 -> 3)."""
    stages = int(round(math.log2(image_size))) - 2
    if image_size < 8 or 2 ** (stages + 2) != image_size:
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return stages


def _width(base: int, level: int, max_channels: int) -> int:
    return min(base * 2**level, max_channels)


def init_gan_weights(module: nn.Module) -> None:
    """DCGAN / pix2pix initialisation: conv weights N(0, 0.02); norm weights N(1, 0.02); biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class TumourLabelGenerator(nn.Module):
    """z (B, latent_dim) -> tumour maps (B, C, S, S) with values in [0, 1].

    Multi-class (`binary=False`): the last layer emits 4 logits per pixel (background, NCR/NET, ED, ET);
    a softmax over them gives class probabilities and the output keeps the 3 tumour-region channels
    (background = 1 - their sum). Binary: 1 logit per pixel through a sigmoid (whole tumour), which is
    the same as a softmax over {background, tumour}. `logits()` returns the raw class logits.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        image_size: int = 128,
        base_channels: int = 64,
        max_channels: int = 512,
        binary: bool = False,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.binary = binary
        self.out_channels = 1 if binary else 3
        num_logits = 1 if binary else 4
        stages = _num_stages(image_size)
        # widths from 4x4 up: widest at the bottom, base_channels just before the output stage
        widths = [_width(base_channels, stages - 1 - i, max_channels) for i in range(stages)]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.ConvTranspose2d(widths[-1], num_logits, 4, 2, 1))
        self.net = nn.Sequential(*layers)
        init_gan_weights(self)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Raw per-pixel logits (B, 4, S, S) for multi-class, (B, 1, S, S) for binary."""
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.logits(z)
        if self.binary:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)[:, 1:]


class TumourLabelDiscriminator(nn.Module):
    """Tumour maps (B, C, S, S) in [0, 1] -> one real/fake logit per map (B,)."""

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 128,
        base_channels: int = 64,
        max_channels: int = 512,
        minibatch_std: bool = False,
    ) -> None:
        super().__init__()
        stages = _num_stages(image_size)
        widths = [_width(base_channels, i, max_channels) for i in range(stages)]
        self.minibatch_std = minibatch_std
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(widths[-1] + int(minibatch_std), 1, 4, 1, 0)  # 4x4 -> 1x1
        init_gan_weights(self)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = self.features(maps)
        if self.minibatch_std:
            # one more 4x4 channel: how much the batch's features vary (a collapsed generator's batch does
            # not), so D can tell a batch of near-copies from real variety and G is pushed to spread out
            spread = x.std(dim=0, unbiased=False).mean() if len(x) > 1 else x.new_zeros(())
            x = torch.cat([x, spread.expand(len(x), 1, *x.shape[2:])], dim=1)
        return self.head(x).flatten()
