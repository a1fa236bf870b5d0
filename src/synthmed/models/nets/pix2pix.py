"""pix2pix networks: a U-Net generator (label map + brain mask -> MRI modalities) and a 70x70 PatchGAN.

Plain `nn.Module`s; the losses and the training loop live in `synthmed.models.pix2pix`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.models.nets.dcgan import init_gan_weights


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"norm must be 'batch' or 'instance', got {kind!r}")


def unet_depth(image_size: int, max_downs: int = 8) -> int:
    """Number of stride-2 levels for a slice of `image_size`: log2 of the next power of two, capped
    (240 -> 256 -> 8, 128 -> 7, 64 -> 6, 32 -> 5), so the bottleneck is 1x1 up to 256."""
    return min(max(1, math.ceil(math.log2(image_size))), max_downs)


class BrainUNetGenerator(nn.Module):
    """(B, in_channels, H, W) conditioning -> (B, out_channels, H, W) images, any H, W.

    U-Net with `num_downs` levels (conv 4x4 / stride 2). Encoder: LeakyReLU(0.2) + conv + norm (no norm
    on the first and the innermost level); decoder: ReLU + transposed conv + norm, its output
    concatenated with the mirrored encoder output (skip connection); `upsample="resize"` swaps each
    transposed conv for nearest x2 + conv 3x3. Dropout(p) follows the norm in the
    `num_dropout` decoder blocks just above the innermost one (pix2pix's noise source; active only in
    train mode). The last layer is linear: the targets are z-scored intensities, unbounded, so a tanh
    would clip them.

    The input is zero-padded (symmetrically) to a multiple of 2**num_downs and the output cropped back,
    so 240x240 slices go through a 256x256 U-Net and come out 240x240. Zero is the right fill: the
    conditioning (one-hot tumour + brain mask) is zero outside the head.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        num_downs: int = 8,
        base_channels: int = 64,
        max_channels: int = 512,
        norm: str = "batch",
        num_dropout: int = 3,
        dropout: float = 0.5,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"num_downs must be >= 2, got {num_downs}")
        if upsample not in ("transpose", "resize"):
            raise ValueError(f"upsample must be 'transpose' or 'resize', got {upsample!r}")

        def up(c_in: int, c_out: int, with_bias: bool) -> nn.Module:
            """x2 upsampling: transposed conv 4x4 / stride 2 (pix2pix), or nearest x2 + conv 3x3 ('resize',
            which cannot draw the checkerboard pattern overlapping transposed kernels can)."""
            if upsample == "transpose":
                return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=with_bias)
            return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=with_bias))
        self.num_downs = num_downs
        bias = norm == "instance"  # batch norm has its own shift
        widths = [min(base_channels * 2**i, max_channels) for i in range(num_downs)]

        self.down = nn.ModuleList([nn.Conv2d(in_channels, widths[0], 4, 2, 1, bias=bias)])
        for i in range(1, num_downs):
            innermost = i == num_downs - 1
            block: list[nn.Module] = [
                nn.LeakyReLU(0.2),
                nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=bias or innermost),
            ]
            if not innermost:  # a 1x1 bottleneck has nothing to normalise over
                block.append(_norm(norm, widths[i]))
            self.down.append(nn.Sequential(*block))

        # up[i] produces the resolution of down[i - 1]'s output; up[0] produces the image
        ups: list[nn.Module] = [
            nn.Sequential(nn.ReLU(), up(2 * widths[0], out_channels, True))
        ]
        dropout_levels = set(range(num_downs - 2, max(0, num_downs - 2 - num_dropout), -1))
        for i in range(1, num_downs):
            c_in = widths[i] if i == num_downs - 1 else 2 * widths[i]
            block = [
                nn.ReLU(),
                up(c_in, widths[i - 1], bias),
                _norm(norm, widths[i - 1]),
            ]
            if i in dropout_levels and dropout > 0:
                block.append(nn.Dropout(dropout))
            ups.append(nn.Sequential(*block))
        self.up = nn.ModuleList(ups)
        init_gan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        multiple = 2**self.num_downs
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        top, left = pad_h // 2, pad_w // 2
        if pad_h or pad_w:
            x = F.pad(x, (left, pad_w - left, top, pad_h - top))
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        y = self.up[-1](skips[-1])
        for i in range(self.num_downs - 2, -1, -1):
            y = self.up[i](torch.cat([y, skips[i]], dim=1))
        return y[..., top : top + h, left : left + w]


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN: (B, in_channels, H, W) -> (B, 1, H', W') logits, one per overlapping patch.

    C64-C128-C256-C512 (conv 4x4, strides 2, 2, 2, 1, LeakyReLU(0.2); norm on all but the first) then a
    1-channel conv 4x4 / stride 1. Each output logit sees a 70x70 input window (`receptive_field()`).
    """

    def __init__(
        self, in_channels: int, base_channels: int = 64, num_layers: int = 3, norm: str = "batch"
    ) -> None:
        super().__init__()
        bias = norm == "instance"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c_in = base_channels
        for i in range(1, num_layers + 1):
            c_out = base_channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(c_in, c_out, 4, stride, 1, bias=bias), _norm(norm, c_out), nn.LeakyReLU(0.2)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        init_gan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def receptive_field(self) -> int:
        """Side of the input window one output logit depends on, from the conv layers' kernels and strides."""
        field, jump = 1, 1
        for m in self.net:
            if isinstance(m, nn.Conv2d):
                field += (m.kernel_size[0] - 1) * jump
                jump *= m.stride[0]
        return field
