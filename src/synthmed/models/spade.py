"""A SPADE brain generator: (tumour label map + brain mask, noise z) -> MRI modalities.

It fills the slot of pix2pix (`BrainSliceTranslator`, same `condition` / `translate` interface), with
three changes aimed at what pix2pix gets wrong (blurred brains without gyri or ventricles):

1. The conditioning (one-hot NCR/ED/ET + brain mask) modulates every generator layer through
   spatially-adaptive normalisation instead of entering once at the input (`nets/spade.py`).
2. The generator starts from noise z, so the anatomy the conditioning leaves open is drawn, one brain per
   z, instead of averaged: the same map and mask with two seeds give two brains. With `anatomy="tissue"` the
   conditioning also holds the tissue classes of the real slice the mask comes from (as pix2pix's, and as in
   SPADE's own use: semantic label maps in, images out), and z draws the texture of a given anatomy.
3. No L1-dominated loss (L1 to one real image is what turns a one-to-many answer into a blur). G is trained
   by the hinge loss of a multi-scale PatchGAN plus feature matching (L1 between the discriminator's
   intermediate features of real and synthetic slices, `fm_weight`), with an optional small pixel L1
   (`l1_weight`). D and G have their own learning rates (two time-scale update rule, `lr_d` > `lr_g`).

Losses, per scale s of the discriminator (averaged over scales):
    D: mean(relu(1 - D_s(c, real))) + mean(relu(1 + D_s(c, G(c, z))))            (logged d_real + d_fake)
    G: -mean(D_s(c, G(c, z)))                                                     (g_adv)
       + fm_weight * mean over layers |D_s^l(c, G(c, z)) - D_s^l(c, real)|_1     (g_fm)
       + l1_weight * |G(c, z) - real|_1                                           (g_l1)
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from synthmed.models.nets.spade import MultiScaleDiscriminator, SpadeGenerator
from synthmed.models.pix2pix import (
    SampleGrids,
    batch_statistics,
    brain_condition,
    check_anatomy,
    condition_channels,
    translation_grid,
)


class SpadeTranslator(SampleGrids, pl.LightningModule):
    """SPADE: (tumour label map, brain mask) + z -> `out_channels` MRI modalities, z-scored.

    Drop-in for `BrainSliceTranslator` (the brain-generator slot of `aug=gan`, `aug.pairs.pix2pix`):
    the same `condition(label_map, brain)` and `translate(label_map, brain)`, plus a `generator`
    argument to `translate` for the noise. `image_size` is the slice size callers use (240, 128, 64, 32,
    any size >= 8); the generator pads/crops internally, so 240 in gives 240 out.
    All args are plain values (checkpoints load with `weights_only=True`); the defaults live in
    `conf/model/spade.yaml`.
    """

    def __init__(
        self,
        image_size: int,
        out_channels: int,
        binary: bool,
        latent_dim: int,
        g_channels: int,
        d_channels: int,
        max_channels: int,
        norm: str,
        d_scales: int,
        d_downs: int,
        fm_weight: float,
        l1_weight: float,
        lr_g: float,
        lr_d: float,
        betas: tuple[float, float] | list[float],
        num_val_images: int,
        sample_seed: int,
        anatomy: str,
        anatomy_modality: int,
        tissue_classes: int,
    ) -> None:
        super().__init__()
        check_anatomy(anatomy, anatomy_modality, out_channels)
        betas = tuple(float(b) for b in betas)  # a YAML list arrives as ListConfig; keep hparams plain
        self.save_hyperparameters()
        self.automatic_optimization = False
        in_channels = condition_channels(binary, anatomy, tissue_classes)  # tumour, brain mask (, tissue classes)
        self.generator = SpadeGenerator(image_size, in_channels, out_channels, latent_dim, g_channels, max_channels,
                                        norm)
        # D judges the pair: conditioning and image stacked along channels
        self.discriminator = MultiScaleDiscriminator(in_channels + out_channels, d_channels, d_scales, d_downs,
                                                     max_channels, image_size)

    # --- conditioning and sampling ------------------------------------------------------------
    def condition(self, label_map: torch.Tensor, brain: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """The conditioning: tumour channels, brain mask (and with `anatomy="tissue"` the tissue classes of `image`,
        the real slice the mask comes from), as pix2pix's (`pix2pix.brain_condition`)."""
        return brain_condition(label_map, brain, image, self.hparams)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I), (n, latent_dim), from `generator` (on its device) or the global RNG, on the module's device."""
        device = generator.device if generator is not None else self.device
        return torch.randn(n, self.hparams.latent_dim, generator=generator, device=device).to(self.device)

    def forward(self, cond: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Conditioning (B, C, H, W) (+ z, drawn from the global RNG when None) -> images (B, out_channels, H, W)."""
        return self.generator(cond, self.noise(cond.shape[0]) if z is None else z)

    @torch.no_grad()
    def translate(self, label_map: torch.Tensor, brain: torch.Tensor, generator: torch.Generator | None = None,
                  image: torch.Tensor | None = None, batch_stats: bool = False) -> torch.Tensor:
        """labels (B, H, W) int64 in 0..3 + brain mask (B, 1, H, W) -> images (B, M, H, W) float32; `batch_stats`:
        batch norm on the statistics of these B slices (`pix2pix.batch_statistics`).

        `image` (the real slices the masks come from) is read only with `anatomy="tissue"`: otherwise SPADE draws
        the anatomy from z. One z per slice, drawn from `generator` (the same seeded generator gives the same
        images; another seed, other brains for the same maps) or from the global RNG when None. Eval mode under
        no_grad: batch norm on running statistics (a slice does not depend on its batch-mates) unless `batch_stats`.
        Inputs are moved to the module's device; the previous train/eval mode is restored."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            cond = self.condition(label_map.to(self.device), brain.to(self.device),
                                  None if image is None else image.to(self.device))
            noise = self.noise(cond.shape[0], generator)
            with batch_statistics(self.generator, batch_stats):
                return self.generator(cond, noise)
        finally:
            self.generator.train(was_training)

    # --- losses -------------------------------------------------------------------------------
    def _judge(self, cond: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        return self.discriminator(torch.cat([cond, image], dim=1))

    @staticmethod
    def _feature_matching(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
        """Mean over scales and layers (the logits excluded) of the L1 distance between D's features."""
        losses = [F.l1_loss(f, r.detach()) for fs, rs in zip(fake, real, strict=True)
                  for f, r in zip(fs[:-1], rs[:-1], strict=True)]
        return torch.stack(losses).mean()

    def _unpack(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        image = batch["image"].float()
        if image.ndim != 4 or image.shape[1] != self.hparams.out_channels:
            raise ValueError(f"batch['image'] must be (B, {self.hparams.out_channels}, H, W) (model.out_channels), "
                             f"got {tuple(image.shape)}")
        return self.condition(batch["seg"], batch["brain"], image), image

    def _finite(self, **losses: torch.Tensor) -> None:
        """A diverged GAN stops here, with the loss and the learning rates named, before it steps on NaNs
        (also when no StopOnNonFiniteLoss callback is attached, as inside aug=gan)."""
        for key, value in losses.items():
            number = float(value.detach())
            if not math.isfinite(number):
                raise FloatingPointError(
                    f"the SPADE generator diverged: train/{key} is {number} at step {self.global_step} (epoch "
                    f"{self.current_epoch}); lower model.lr_g={self.hparams.lr_g} / model.lr_d={self.hparams.lr_d}, "
                    "or check the data")

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        cond, real = self._unpack(batch)
        fake = self(cond)  # z from the global RNG: seeded by the run, so the same config gives the same numbers

        with self.toggled_optimizer(opt_d):
            judged_real = self._judge(cond, real)
            judged_fake = self._judge(cond, fake.detach())
            d_real = torch.stack([F.relu(1 - out[-1]).mean() for out in judged_real]).mean()
            d_fake = torch.stack([F.relu(1 + out[-1]).mean() for out in judged_fake]).mean()
            d_loss = d_real + d_fake
            self._finite(d_loss=d_loss)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()

        with self.toggled_optimizer(opt_g):
            judged_fake = self._judge(cond, fake)
            with torch.no_grad():  # the real features, from the discriminator as it is now
                judged_real = self._judge(cond, real)
            g_adv = torch.stack([-out[-1].mean() for out in judged_fake]).mean()
            g_fm = self._feature_matching(judged_fake, judged_real)
            g_l1 = F.l1_loss(fake, real)
            g_loss = g_adv + self.hparams.fm_weight * g_fm + self.hparams.l1_weight * g_l1
            self._finite(g_loss=g_loss)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()

        n = real.shape[0]
        self._keep_fixed(batch)
        losses = {"d_loss": d_loss, "g_loss": g_loss, "g_adv": g_adv, "g_fm": g_fm, "g_l1": g_l1,
                  "d_real": d_real, "d_fake": d_fake}
        for key, value in losses.items():  # every step (the curves) and the epoch means (convergence at a glance)
            self.log(f"train/{key}", value.detach(), on_step=True, on_epoch=True, prog_bar=key in ("d_loss", "g_loss"),
                     batch_size=n)

    grid_name = "spade"

    def _sample_grid(self, labels: torch.Tensor, brain: torch.Tensor, real: torch.Tensor) -> np.ndarray:
        """One row per example: label map | real modalities | synthetic (z_1) | synthetic (z_2), two draws
        from the fixed noise of `sample_seed`: the grid shows the same z every epoch, and how much z changes."""
        rng = torch.Generator().manual_seed(self.hparams.sample_seed)
        first = self.translate(labels, brain, generator=rng, image=real)
        second = self.translate(labels, brain, generator=rng, image=real)
        grid = translation_grid(labels, real, first)
        other = translation_grid(labels, real, second)
        m, w, pad = real.shape[1], real.shape[-1], 2
        gutter = np.full((grid.shape[0], pad, 3), 255, dtype=np.uint8)
        return np.concatenate([grid, gutter, other[:, (1 + m) * (w + pad):]], axis=1)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        cond, real = self._unpack(batch)
        # seeded noise: val/l1 compares epochs on the same z and leaves the training RNG stream alone
        rng = torch.Generator().manual_seed(self.hparams.sample_seed + batch_idx)
        fake = self.generator(cond, self.noise(cond.shape[0], rng))
        # one z's L1 to the one real slice: a loose check (a good sample need not match its real pair)
        self.log("val/l1", F.l1_loss(fake, real), prog_bar=True, batch_size=real.shape[0])
        self._log_val_grid(batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        cond, real = self._unpack(batch)
        rng = torch.Generator().manual_seed(self.hparams.sample_seed + batch_idx)
        fake = self.generator(cond, self.noise(cond.shape[0], rng))
        self.log("test/l1", F.l1_loss(fake, real), batch_size=real.shape[0])

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr_g, betas=tuple(hp.betas))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_d, betas=tuple(hp.betas))
        return [opt_g, opt_d]
