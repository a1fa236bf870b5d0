"""The tumour painter: paints MRI modalities inside a tumour region of a real slice, the rest staying real.

The second synthesis route of the brain study (`aug=gan_inpaint`). Where pix2pix draws a whole slice from a
label map and a brain mask, this generator keeps a real slice and repaints only a region around a (placed,
synthetic) tumour: the anatomy outside the region is real by construction, so the only thing to learn is a
tumour and its surroundings in context.

Input (channels stacked): the tumour one-hot (NCR, ED, ET; one whole-tumour channel with `binary=True`), the
brain mask, the region mask, and the real image with the region blanked (zero inside it, z-scored real
intensities outside). Output: the modalities. The result is the composite `region * fake + (1 - region) * real`
(computed with `torch.where`, so every pixel outside the region is the real one bit for bit).

Region: the tumour dilated by `dilate` pixels (a disc), intersected with the brain (`region()`); in training the
tumour is the slice's own, at synthesis the synthetic one placed into the slice (synthmed.augment.inpaint).

Losses: L1 to the real image inside the region (`l1_weight`, normalised by the region's pixels) plus the
adversarial loss of a PatchGAN that judges (condition, composite) against (condition, real), `gan_mode`
vanilla (BCE on logits) or lsgan; D's loss halved as in pix2pix. The networks are pix2pix's
(`nets/pix2pix.py`), the decoder with `upsample` (resize by default: no checkerboard stripes).

Window (`window`, px; null: the whole slice): the painter trains and paints on a `window` x `window` crop around
each region (centred on its bounding box, inside the slice), the U-Net as deep as the window needs. Only the region
changes, so painting the window is painting the slice; the compute falls with the window's area. A batch whose
region does not fit in the window is trained on whole slices (the U-Net is convolutional), and such a slice is
painted whole.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from synthmed.models.dcgan import region_channels
from synthmed.models.nets.pix2pix import BrainUNetGenerator, PatchDiscriminator, unet_depth
from synthmed.models.pix2pix import SampleGrids, adversarial_loss, check_gan_mode, translation_grid


def disc(radius: int) -> torch.Tensor:
    """(2r+1, 2r+1) float kernel: 1 on the pixels within `radius` of the centre (Euclidean)."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2 + 1e-6).float()


def window_corners(region: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, H, W) 0/1 regions -> (B, 2) long: the top-left corner (row, column) of a `size` x `size` window
    centred on each region's bounding box and moved inside the slice (an empty region: the slice's centre).
    Row -1 where the bounding box is larger than the window (the slice is then taken whole)."""
    height, width = region.shape[-2:]
    corners = []
    for mask in region[:, 0] > 0:
        rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
        if len(rows) == 0:
            corners.append(((height - size) // 2, (width - size) // 2))
            continue
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        if bottom - top > size or right - left > size:
            corners.append((-1, -1))
            continue
        corners.append((min(max((top + bottom) // 2 - size // 2, 0), height - size),
                        min(max((left + right) // 2 - size // 2, 0), width - size)))
    return torch.tensor(corners, dtype=torch.long).reshape(-1, 2)


def crop(tensor: torch.Tensor, corners: torch.Tensor, size: int) -> torch.Tensor:
    """(B, ..., H, W) -> (B, ..., size, size): each item's window at its corner (`window_corners`)."""
    return torch.stack([item[..., y:y + size, x:x + size] for item, (y, x) in zip(tensor, corners.tolist(),
                                                                                     strict=True)])


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 1, H, W) 0/1 mask grown by `radius` pixels (a disc); exact (sums of 0/1 values), so deterministic."""
    if radius <= 0:
        return (mask > 0).float()
    kernel = disc(radius).to(mask.device)[None, None]
    return (F.conv2d((mask > 0).float(), kernel, padding=radius) > 0.5).float()


class TumourInpainter(SampleGrids, pl.LightningModule):
    """(real slice, label map, brain mask, region) -> the slice with MRI painted inside the region only.

    `image_size` is the slice size (the U-Net pads to the next power of two and crops back, as pix2pix's);
    `out_channels` the modalities. All args are plain values (checkpoints load with `weights_only=True`).
    """

    def __init__(
        self,
        image_size: int,
        out_channels: int,
        binary: bool,
        g_channels: int,
        d_channels: int,
        max_channels: int,
        norm: str,
        num_dropout: int,
        dropout: float,
        upsample: str,
        gan_mode: str,
        l1_weight: float,
        dilate: int,
        lr: float,
        betas: tuple[float, float] | list[float],
        num_val_images: int,
        window: int | None = None,
    ) -> None:
        super().__init__()
        check_gan_mode(gan_mode)
        if int(dilate) < 0:
            raise ValueError(f"model.dilate={dilate} must be >= 0 (pixels the region reaches beyond the tumour)")
        if window is not None and not 8 <= int(window) <= int(image_size):
            raise ValueError(f"model.window={window} must be null (whole slices) or from 8 to the slice size "
                             f"model.image_size={image_size} (pixels of the square painted around each region)")
        betas = tuple(float(b) for b in betas)  # a YAML list arrives as ListConfig; keep hparams plain
        self.save_hyperparameters()
        self.automatic_optimization = False
        # tumour channels + brain mask + region mask + the blanked real image
        in_channels = (1 if binary else 3) + 2 + out_channels
        self.generator = BrainUNetGenerator(
            in_channels,
            out_channels,
            num_downs=unet_depth(window or image_size),
            base_channels=g_channels,
            max_channels=max_channels,
            norm=norm,
            num_dropout=num_dropout,
            dropout=dropout,
            upsample=upsample,
        )
        # D judges the composite beside its condition (where the region is, what the label says, what is real)
        self.discriminator = PatchDiscriminator(in_channels + out_channels, d_channels, num_layers=3, norm=norm)

    # --- region, condition, composite, window ------------------------------------------------------
    def _window(self, region: torch.Tensor) -> torch.Tensor | None:
        """Corners of the windows of `region` (`window_corners`), or None: no window, or the slices are smaller."""
        size = self.hparams.get("window")
        if size is None or int(size) >= min(region.shape[-2:]):
            return None
        return window_corners(region, int(size))

    def region(self, label_map: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
        """labels (B, H, W) + brain (B, 1, H, W) -> (B, 1, H, W) float 0/1: the tumour dilated by `dilate`
        pixels, inside the brain."""
        if brain.ndim == 3:
            brain = brain.unsqueeze(1)
        return dilate((label_map > 0).unsqueeze(1).float(), int(self.hparams.dilate)) * (brain > 0).float()

    def condition(self, image: torch.Tensor, label_map: torch.Tensor, brain: torch.Tensor,
                  region: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W): tumour one-hot, brain, region, and the real image zeroed inside the region."""
        brain = self.check_shapes(image, label_map, brain, region)
        region = (region > 0).float()
        tumour = region_channels(label_map, self.hparams.binary)
        return torch.cat([tumour, brain.float(), region, image.float() * (1.0 - region)], dim=1)

    def check_shapes(self, image: torch.Tensor, label_map: torch.Tensor, brain: torch.Tensor,
                     region: torch.Tensor) -> torch.Tensor:
        """One clear error for inputs whose shapes do not match; returns the brain mask as (B, 1, H, W)."""
        out = self.hparams.out_channels
        if image.ndim != 4 or image.shape[1] != out:
            raise ValueError(f"image must be (B, {out}, H, W) (model.out_channels), got {tuple(image.shape)}")
        if label_map.ndim != 3 or label_map.shape[0] != image.shape[0] or label_map.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"label map must be (B, H, W) matching image {tuple(image.shape)}, got "
                             f"{tuple(label_map.shape)}")
        if brain.ndim == 3:
            brain = brain.unsqueeze(1)
        for name, mask in (("brain mask", brain), ("region", region)):
            if tuple(mask.shape) != (image.shape[0], 1, *image.shape[-2:]):
                raise ValueError(f"{name} must be (B, 1, H, W) matching image {tuple(image.shape)}, got "
                                 f"{tuple(mask.shape)}")
        return brain

    @staticmethod
    def composite(fake: torch.Tensor, real: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """`region * fake + (1 - region) * real` for a 0/1 region, as a selection: outside the region every
        pixel is the real one bit for bit (a product would turn a non-finite fake into NaN there)."""
        return torch.where(region > 0, fake, real)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """Condition (B, C, H, W) -> raw generator output (B, out_channels, H, W) (not composited)."""
        return self.generator(cond)

    @torch.no_grad()
    def paint(self, image: torch.Tensor, label_map: torch.Tensor, brain: torch.Tensor, region: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """Real images (B, M, H, W) + their new labels (B, H, W) + brain masks + regions (B, 1, H, W) -> the
        images painted inside the regions (B, M, H, W) float32, equal to `image` outside them.

        Eval mode (dropout off, batch norm on running statistics) under no_grad: deterministic. Inputs are
        moved to the module's device; the previous mode is restored. `generator` is unused (nothing is drawn
        at synthesis); accepted so every synthesis route is called alike. With `window`, each slice is painted on
        its window (`window_corners`) and pasted back, a slice whose region does not fit in one on the whole slice."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            image, region = image.to(self.device).float(), region.to(self.device).float()
            label_map = label_map.to(self.device)
            brain = self.check_shapes(image, label_map, brain.to(self.device), region)  # on the whole slices
            corners = self._window(region)
            if corners is None:
                return self.composite(self.generator(self.condition(image, label_map, brain, region)), image, region)
            painted = image.clone()
            fits = corners[:, 0] >= 0
            for chosen, size in ((fits, int(self.hparams.window)), (~fits, None)):
                index = torch.nonzero(chosen).flatten()
                if len(index) == 0:
                    continue
                parts = [t[index.to(t.device)] for t in (image, label_map, brain, region)]
                if size is None:  # regions larger than the window: the whole slice
                    painted[index] = self.composite(self.generator(self.condition(*parts)), parts[0], parts[3])
                    continue
                where = corners[index]
                parts = [crop(t, where, size) for t in parts]
                out = self.composite(self.generator(self.condition(*parts)), parts[0], parts[3])
                for k, (i, (y, x)) in enumerate(zip(index.tolist(), where.tolist(), strict=True)):
                    painted[i, :, y:y + size, x:x + size] = out[k]
            return painted
        finally:
            self.generator.train(was_training)

    # --- losses and sample grids ------------------------------------------------------------------
    grid_name = "inpaint"

    def _adversarial(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        return adversarial_loss(logits, real, self.hparams.gan_mode)

    def _sample_grid(self, seg: torch.Tensor, brain: torch.Tensor, image: torch.Tensor) -> np.ndarray:
        """label map | real modalities | the slice painted inside the tumour's region."""
        return translation_grid(seg, image, self.paint(image, seg, brain, self.region(seg, brain)))

    @staticmethod
    def region_l1(fake: torch.Tensor, real: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """Mean absolute error over the region's pixels and all modalities (0 for an empty region)."""
        inside = region.expand_as(real)
        return ((fake - real).abs() * inside).sum() / inside.sum().clamp(min=1.0)

    def _unpack(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(condition, real, region) of a batch: on each slice's window (`window`) when every region fits in
        one, else on the whole slices."""
        real, seg, brain = batch["image"].float(), batch["seg"], batch["brain"]
        if brain.ndim == 3:
            brain = brain.unsqueeze(1)
        region = self.region(seg, brain)
        corners = self._window(region)
        if corners is not None and bool((corners[:, 0] >= 0).all()):
            size = int(self.hparams.window)
            real, seg, brain, region = (crop(t, corners, size) for t in (real, seg, brain, region))
        return self.condition(real, seg, brain, region), real, region

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        cond, real, region = self._unpack(batch)
        fake = self.generator(cond)
        painted = self.composite(fake, real, region)

        with self.toggled_optimizer(opt_d):
            d_real = self.discriminator(torch.cat([cond, real], dim=1))
            d_fake = self.discriminator(torch.cat([cond, painted.detach()], dim=1))
            d_loss = 0.5 * (self._adversarial(d_real, True) + self._adversarial(d_fake, False))
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()

        with self.toggled_optimizer(opt_g):
            g_adv = self._adversarial(self.discriminator(torch.cat([cond, painted], dim=1)), True)
            g_l1 = self.region_l1(fake, real, region)
            g_loss = g_adv + self.hparams.l1_weight * g_l1
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()

        for name, value in (("d_loss", d_loss), ("g_loss", g_loss)):
            if not torch.isfinite(value):
                raise FloatingPointError(f"TumourInpainter: train/{name} is {value.item()} at step {self.global_step}")
        n = real.shape[0]
        self._keep_fixed(batch)
        self.log("train/d_loss", d_loss.detach(), prog_bar=True, batch_size=n)
        self.log("train/g_loss", g_loss.detach(), prog_bar=True, batch_size=n)
        self.log("train/g_adv", g_adv.detach(), batch_size=n)
        self.log("train/g_l1", g_l1.detach(), batch_size=n)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        cond, real, region = self._unpack(batch)
        fake = self.generator(cond)
        self.log("val/l1", self.region_l1(fake, real, region), prog_bar=True, batch_size=real.shape[0])
        self._log_val_grid(batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        cond, real, region = self._unpack(batch)
        self.log("test/l1", self.region_l1(self.generator(cond), real, region), batch_size=real.shape[0])

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        return [opt_g, opt_d]
