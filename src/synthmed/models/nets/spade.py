"""SPADE networks: a noise-driven generator whose every decoder layer is modulated by the conditioning
(tumour one-hot + brain mask), and a multi-scale PatchGAN that also returns its intermediate features.

The idea is that of SPADE (Park et al., 2019, "Semantic image synthesis with spatially-adaptive
normalization"): a normalisation layer washes out a conditioning map fed only at the input, so the map
is fed to every layer instead, as a per-pixel scale and shift after a parameter-free normalisation.
Plain `nn.Module`s; the losses and the training loop live in `synthmed.models.spade`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

MIN_IMAGE_SIZE = 8  # the smallest slice: one x2 stage above a 4x4 start


def spade_levels(image_size: int, start_size: int = 4) -> tuple[int, int]:
    """(number of x2 upsampling stages, side of the starting grid) for a slice of `image_size`: the grid
    times 2**stages is the smallest such side >= image_size (240 -> 4 * 2**6 = 256, 128 -> 4 * 2**5)."""
    if int(image_size) < MIN_IMAGE_SIZE:
        raise ValueError(f"model.image_size must be >= {MIN_IMAGE_SIZE} for the SPADE generator, got {image_size}")
    stages = max(1, math.ceil(math.log2(image_size / start_size)))
    return stages, math.ceil(image_size / 2**stages)


def _norm(kind: str, channels: int) -> nn.Module:
    """Parameter-free normalisation: the conditioning supplies the scale and shift."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    raise ValueError(f"model.norm must be 'batch' or 'instance', got {kind!r}")


class SpatialModulation(nn.Module):
    """Spatially-adaptive normalisation: norm(x) * (1 + gamma(c)) + beta(c), where gamma and beta are
    per-pixel, per-channel maps that small convs predict from the conditioning `c` resized to x's grid:
    a shared conv 3x3 + ReLU (`hidden` channels; it sees the 3x3 neighbourhood of the conditioning), then
    a conv 1x1 to gamma and beta (a 3x3 there would cost 9x as much for little: the conditioning is a
    few piecewise-constant masks, and the coarse layers already see it over a wide area).

    The conditioning is resized by area averaging, so a tumour smaller than a cell of a coarse layer still
    shows there as a fraction instead of vanishing (nearest sampling can miss it). The modulation convs are
    not spectrally normalised: they map a 0/1 mask to a scale and must be free to reach any size."""

    def __init__(self, channels: int, cond_channels: int, hidden: int, norm: str) -> None:
        super().__init__()
        self.norm = _norm(norm, channels)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma_beta = nn.Conv2d(hidden, 2 * channels, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.adaptive_avg_pool2d(cond, x.shape[-2:])
        gamma, beta = self.gamma_beta(self.shared(cond)).chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class SpadeResBlock(nn.Module):
    """Residual block, each conv 3x3 preceded by spatial modulation + LeakyReLU(0.2):
    x -> [mod, act, conv 3x3] -> [mod, act, conv 3x3], plus a shortcut: x itself, or a conv 1x1 when the
    width changes (not modulated: the residual path carries the conditioning). Convs spectrally normalised."""

    def __init__(self, c_in: int, c_out: int, cond_channels: int, norm: str) -> None:
        super().__init__()
        c_mid = min(c_in, c_out)
        self.mod_0 = SpatialModulation(c_in, cond_channels, hidden=c_mid, norm=norm)
        self.conv_0 = spectral_norm(nn.Conv2d(c_in, c_mid, 3, padding=1))
        self.mod_1 = SpatialModulation(c_mid, cond_channels, hidden=c_mid, norm=norm)
        self.conv_1 = spectral_norm(nn.Conv2d(c_mid, c_out, 3, padding=1))
        self.shortcut = spectral_norm(nn.Conv2d(c_in, c_out, 1, bias=False)) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv_0(F.leaky_relu(self.mod_0(x, cond), 0.2))
        h = self.conv_1(F.leaky_relu(self.mod_1(h, cond), 0.2))
        return self.shortcut(x) + h


class SpadeGenerator(nn.Module):
    """(B, cond_channels, H, W) conditioning + z (B, latent_dim) -> (B, out_channels, H, W) images.

    z is mapped (spectrally normalised linear layer) to a `start x start` grid of the widest features,
    then a SPADE residual block at that grid and `stages` of nearest x2 upsampling + SPADE residual block
    (no transposed convs: they draw checkerboard stripes). Widths halve on the way up from
    `base_channels * 2**stages` (capped at `max_channels`) to `base_channels`. The last layer is
    LeakyReLU + conv 3x3, linear: the targets are z-scored intensities, unbounded, so a tanh would clip them.

    z carries what the conditioning leaves open (the anatomy inside the mask): one map, many brains.
    The conditioning is zero-padded symmetrically to `start * 2**stages` (240 -> 256) and the output
    cropped back, as `BrainUNetGenerator` does; zero is the right fill, the conditioning is zero outside
    the head.
    """

    def __init__(
        self,
        image_size: int,
        cond_channels: int,
        out_channels: int,
        latent_dim: int,
        base_channels: int,
        max_channels: int,
        norm: str,
    ) -> None:
        super().__init__()
        self.image_size = int(image_size)
        self.latent_dim = int(latent_dim)
        self.stages, self.start = spade_levels(self.image_size)
        widths = [min(base_channels * 2 ** (self.stages - level), max_channels) for level in range(self.stages + 1)]
        self.widths = widths
        self.from_noise = spectral_norm(nn.Linear(latent_dim, widths[0] * self.start**2))
        self.blocks = nn.ModuleList([SpadeResBlock(widths[0], widths[0], cond_channels, norm)])
        for level in range(1, self.stages + 1):
            self.blocks.append(SpadeResBlock(widths[level - 1], widths[level], cond_channels, norm))
        self.to_image = spectral_norm(nn.Conv2d(widths[-1], out_channels, 3, padding=1))

    @property
    def padded_size(self) -> int:
        return self.start * 2**self.stages

    def forward(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h, w = cond.shape[-2:]
        side = self.padded_size
        if h > side or w > side:
            raise ValueError(f"conditioning of {h}x{w} is larger than the generator's {side}x{side} "
                             f"(model.image_size={self.image_size})")
        if z.shape != (cond.shape[0], self.latent_dim):
            raise ValueError(f"z must be ({cond.shape[0]}, {self.latent_dim}) (model.latent_dim), got {tuple(z.shape)}")
        pad_h, pad_w = side - h, side - w
        top, left = pad_h // 2, pad_w // 2
        if pad_h or pad_w:
            cond = F.pad(cond, (left, pad_w - left, top, pad_h - top))
        x = self.from_noise(z).view(-1, self.widths[0], self.start, self.start)
        x = self.blocks[0](x, cond)
        for block in self.blocks[1:]:
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), cond)
        image = self.to_image(F.leaky_relu(x, 0.2))
        return image[..., top : top + h, left : left + w]


class PatchFeatures(nn.Module):
    """One PatchGAN: `downs` convs 4x4 / stride 2, then a conv 3x3 / stride 1, each followed by
    LeakyReLU(0.2), then a 1-channel conv 3x3 to logits. Spectral norm on every conv and no other norm (an
    instance norm has nothing to normalise on the 1x1 maps of a small slice's coarsest scale).
    forward returns every layer's output, the logits last."""

    def __init__(self, in_channels: int, base_channels: int, downs: int, max_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(downs + 1):
            c_out = min(base_channels * 2**i, max_channels)
            conv = nn.Conv2d(c_in, c_out, 4, 2, 1) if i < downs else nn.Conv2d(c_in, c_out, 3, 1, 1)
            layers.append(nn.Sequential(spectral_norm(conv), nn.LeakyReLU(0.2)))
            c_in = c_out
        layers.append(spectral_norm(nn.Conv2d(c_in, 1, 3, 1, 1)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        return outputs


class MultiScaleDiscriminator(nn.Module):
    """`num_scales` PatchGANs that judge the same input at full size, 1/2, 1/4, ... (3x3 average pooling,
    stride 2, between scales): the finest judges texture, the coarsest the layout of the whole slice.

    forward(x) -> one list per scale (finest first) of that PatchGAN's layer outputs, the logits last;
    the layers before the logits are the features of the feature-matching loss."""

    def __init__(self, in_channels: int, base_channels: int, num_scales: int, downs: int, max_channels: int,
                 image_size: int) -> None:
        super().__init__()
        if num_scales < 1 or downs < 1:
            raise ValueError(f"model.d_scales and model.d_downs must be >= 1, got {num_scales} and {downs}")
        coarsest = image_size // 2 ** (num_scales - 1)
        if coarsest < 2**downs:
            raise ValueError(f"model.d_scales={num_scales} with model.d_downs={downs} is too deep for "
                             f"model.image_size={image_size}: the coarsest scale ({coarsest} px) must be at least "
                             f"{2**downs} px")
        self.scales = nn.ModuleList(
            [PatchFeatures(in_channels, base_channels, downs, max_channels) for _ in range(num_scales)]
        )

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outputs = []
        for i, patch_gan in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(patch_gan(x))
        return outputs
