"""The brain generator: pix2pix that turns a tumour label map (+ brain mask) into MRI modalities.

Conditioning. The generator sees the tumour as one-hot channels (NCR/NET, ED, ET; or one whole-tumour
channel with `binary=True`) PLUS a brain-mask channel. A tumour map alone says nothing about where the
head is, how big it is or what shape this slice of it has: from a small tumour the whole brain is
one-to-many, and an L1-trained generator answers a one-to-many question with a blurred average. The
mask pins the anatomy's extent, so the output is a plausible whole brain with the tumour where the map
puts it, and the pair (map, image) stays consistent for segmentation training. Masks are cheap to get
at synthesis time: take the brain mask of a real slice and place a sampled tumour inside it.

With `anatomy="tissue"` the conditioning also holds the slice's tissue classes (`tissue_classes` one-hot
channels, dark to bright in the modality `anatomy_modality`: CSF, grey and white matter in T1), read from the
real slice whose brain mask is used, as Shin et al. (2018) condition on brain tissue labels plus tumour labels.
The generator then draws the modalities of a given anatomy instead of guessing it from the outline: the mask
alone leaves ventricles, sulci and the grey/white border one-to-many, and L1 averages them away.

Losses (as in pix2pix): adversarial loss on a 70x70 PatchGAN that judges (condition, image) pairs,
`gan_mode="vanilla"` (binary cross-entropy on logits, the paper's choice, default) or `"lsgan"`
(least squares), plus `l1_weight` (lambda = 100) times the L1 distance to the real image. The
discriminator loss is halved, which slows D relative to G as in the paper.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthmed.data.brats.labels import colourise
from synthmed.models.dcgan import region_channels
from synthmed.models.nets.pix2pix import BrainUNetGenerator, PatchDiscriminator, unet_depth

GAN_MODES = ("vanilla", "lsgan")
ANATOMY = ("mask", "tissue")


@contextlib.contextmanager
def batch_statistics(module: nn.Module, on: bool = True) -> Iterator[None]:
    """With `on`, the batch norm layers of `module` normalise with the statistics of the batch at hand, as pix2pix
    does at test time, instead of their running averages, and leave those untouched; every other layer keeps its
    mode (dropout off in eval). A generator trained with dropout before batch norm shifts the running averages
    away from what dropout-free activations give: the modalities' levels come out wrong (docs/gan.md)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if on else []
    saved = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:  # training without tracking: batch statistics, and the running buffers neither read nor written
        m.train()
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, (training, tracking) in zip(norms, saved, strict=True):
            m.train(training)
            m.track_running_stats = tracking


@torch.no_grad()
def tissue_classes(image: torch.Tensor, brain: torch.Tensor, seg: torch.Tensor, classes: int,
                   iterations: int = 10) -> torch.Tensor:
    """(B, H, W) intensities of one modality, brain masks (B, 1, H, W) or (B, H, W), labels (B, H, W) ->
    (B, classes, H, W) one-hot tissue classes, ordered dark to bright: per slice a 1-D k-means (centres started
    at the `(k + 0.5) / classes` quantiles, `iterations` Lloyd steps) of the pixels inside the brain and outside
    the tumour. Pixels outside the brain or in the tumour belong to no class. Deterministic."""
    inside = (brain.reshape(seg.shape) > 0) & (seg == 0)
    out = torch.zeros(seg.shape[0], classes, *seg.shape[1:], dtype=torch.float32, device=image.device)
    start = torch.tensor([(k + 0.5) / classes for k in range(classes)], device=image.device)
    for b in range(seg.shape[0]):
        values = image[b][inside[b]].float()
        if values.numel() < classes:
            continue
        centres = torch.quantile(values, start)
        for _ in range(iterations):
            nearest = (values[:, None] - centres[None]).abs().argmin(1)
            centres = torch.stack([values[nearest == k].mean() if (nearest == k).any() else centres[k]
                                   for k in range(classes)])
        order = torch.argsort(centres)
        nearest = (values[:, None] - centres[order][None]).abs().argmin(1)
        out[b].permute(1, 2, 0)[inside[b]] = F.one_hot(nearest, classes).float()
    return out


def check_anatomy(anatomy: str, anatomy_modality: int, out_channels: int) -> None:
    """The `anatomy` knobs of a brain generator (pix2pix, SPADE), checked before anything is built."""
    if anatomy not in ANATOMY:
        raise ValueError(f"model.anatomy={anatomy!r} must be one of {list(ANATOMY)}")
    if anatomy == "tissue" and not 0 <= anatomy_modality < out_channels:
        raise ValueError(f"model.anatomy=tissue reads the classes from model.anatomy_modality={anatomy_modality}, "
                         f"which must index one of the {out_channels} modalities (by default t1's: -1 when "
                         f"data.modalities holds no t1)")


def condition_channels(binary: bool, anatomy: str, classes: int) -> int:
    """Channels of a brain generator's conditioning: tumour (1 if binary, else NCR/ED/ET), the brain mask, and
    with `anatomy="tissue"` the tissue classes."""
    return (1 if binary else 3) + 1 + (classes if anatomy == "tissue" else 0)


def brain_condition(label_map: torch.Tensor, brain: torch.Tensor, image: torch.Tensor | None, hp) -> torch.Tensor:
    """labels (B, H, W) in 0..3 + brain mask (B, 1, H, W) -> (B, 4, H, W) (NCR, ED, ET, brain); (B, 2, H, W)
    (tumour, brain) if `hp.binary`; then, with `hp.anatomy="tissue"`, the tissue classes of `image` (B, M, H, W),
    the real slice the brain mask comes from, outside the tumour of `label_map`. `hp`: a brain generator's hparams
    (binary, anatomy, anatomy_modality, tissue_classes)."""
    if label_map.ndim != 3:
        raise ValueError(f"label map must be (B, H, W), got shape {tuple(label_map.shape)}")
    if brain.ndim == 3:
        brain = brain.unsqueeze(1)
    if brain.shape[0] != label_map.shape[0] or brain.shape[-2:] != label_map.shape[-2:]:
        raise ValueError(f"brain mask {tuple(brain.shape)} does not match label map {tuple(label_map.shape)}")
    parts = [region_channels(label_map, hp.binary), brain.float()]
    if hp.anatomy == "tissue":
        if image is None:
            raise ValueError("model.anatomy=tissue reads the tissue classes from a real slice: pass its image")
        parts.append(tissue_classes(image[:, hp.anatomy_modality], brain, label_map, hp.tissue_classes))
    return torch.cat(parts, dim=1)


def check_gan_mode(gan_mode: str) -> None:
    if gan_mode not in GAN_MODES:
        raise ValueError(f"model.gan_mode must be 'vanilla' or 'lsgan', got {gan_mode!r}")


def adversarial_loss(logits: torch.Tensor, real: bool, gan_mode: str) -> torch.Tensor:
    """The PatchGAN loss of pix2pix and the tumour painter: BCE on logits (`vanilla`) or least squares (`lsgan`)."""
    target = torch.full_like(logits, 1.0 if real else 0.0)
    if gan_mode == "lsgan":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


class SampleGrids:
    """The sample grids of a brain generator's LightningModule (pix2pix, SPADE, the tumour painter), a mixin.

    The module gives `grid_name` and `_sample_grid(seg, brain, image) -> uint8 RGB`. Validation draws the grid of
    the validation loader's first batch (`val/<name>_grid`); without validation (a generator trained by an `aug`
    stage) the first training batch is kept and drawn at every epoch end (`samples/<name>_grid`), so the grids
    show the same examples every epoch."""

    grid_name = "generator"

    def _sample_grid(self, seg: torch.Tensor, brain: torch.Tensor, image: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def _keep_fixed(self, batch: dict) -> None:
        if getattr(self, "_fixed", None) is None:
            k = self.hparams.num_val_images
            self._fixed = {key: batch[key][:k].detach().cpu() for key in ("seg", "brain", "image")}

    def _log_val_grid(self, batch: dict, batch_idx: int) -> None:
        if batch_idx == 0 and not self.trainer.sanity_checking:  # the val loader's first batch: fixed
            from synthmed.visual import log_image

            k = self.hparams.num_val_images
            grid = self._sample_grid(batch["seg"][:k], batch["brain"][:k], batch["image"][:k].float())
            log_image(self.trainer, f"val/{self.grid_name}_grid", grid, step=self.current_epoch)

    def on_train_epoch_end(self) -> None:
        from synthmed.visual import grid_epoch, log_image

        fixed = getattr(self, "_fixed", None)
        if self.trainer is None or self.trainer.sanity_checking or fixed is None:
            return
        if self.trainer.limit_val_batches and self.trainer.val_dataloaders is not None:
            return  # validation drew the grid of a fixed validation batch
        if not grid_epoch(self.trainer):
            return
        grid = self._sample_grid(fixed["seg"], fixed["brain"], fixed["image"])
        log_image(self.trainer, f"samples/{self.grid_name}_grid", grid, step=self.current_epoch)


class BrainSliceTranslator(SampleGrids, pl.LightningModule):
    """pix2pix: (tumour label map, brain mask) -> `out_channels` MRI modalities, z-scored.

    `image_size` is the slice size callers use (240 at paper scale; 128/64/32 too); the U-Net depth
    follows from the next power of two and the module pads/crops internally, so 240 in gives 240 out.
    All args are plain values (checkpoints load with `weights_only=True`).
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
        lr: float,
        betas: tuple[float, float] | list[float],
        num_val_images: int,
        anatomy: str,
        anatomy_modality: int,
        tissue_classes: int,
    ) -> None:
        super().__init__()
        check_gan_mode(gan_mode)
        check_anatomy(anatomy, anatomy_modality, out_channels)
        betas = tuple(float(b) for b in betas)  # a YAML list arrives as ListConfig; keep hparams plain
        self.save_hyperparameters()
        self.automatic_optimization = False
        # tumour channels, brain mask, and the tissue classes
        in_channels = condition_channels(binary, anatomy, tissue_classes)
        self.generator = BrainUNetGenerator(
            in_channels,
            out_channels,
            num_downs=unet_depth(image_size),
            base_channels=g_channels,
            max_channels=max_channels,
            norm=norm,
            num_dropout=num_dropout,
            dropout=dropout,
            upsample=upsample,
        )
        # D judges the pair: conditioning and image stacked along channels
        self.discriminator = PatchDiscriminator(
            in_channels + out_channels, d_channels, num_layers=3, norm=norm
        )

    # --- conditioning -------------------------------------------------------------------------
    def condition(self, label_map: torch.Tensor, brain: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """The generator's input: tumour channels, brain mask (and tissue classes of `image`): `brain_condition`."""
        return brain_condition(label_map, brain, image, self.hparams)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """Conditioning (B, C, H, W) -> images (B, out_channels, H, W)."""
        return self.generator(cond)

    @torch.no_grad()
    def translate(self, label_map: torch.Tensor, brain: torch.Tensor, generator: torch.Generator | None = None,
                  image: torch.Tensor | None = None, batch_stats: bool = False) -> torch.Tensor:
        """labels (B, H, W) int64 in 0..3 + brain mask (B, 1, H, W) -> images (B, M, H, W) float32; `image`: the
        real slices the masks come from (read with `anatomy="tissue"`); `batch_stats`: batch norm on the
        statistics of these B slices (`batch_statistics`), not its running averages.

        Eval mode (dropout off, batch norm on running statistics) under no_grad: deterministic.
        Inputs are moved to the module's device; the previous train/eval mode is restored. `generator` is
        unused (pix2pix draws no noise at synthesis); it is accepted so that every brain generator is called
        alike, and one that does draw noise (SPADE) draws it from the caller's seeded generator."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            cond = self.condition(label_map.to(self.device), brain.to(self.device),
                                  None if image is None else image.to(self.device))
            with batch_statistics(self.generator, batch_stats):
                return self.generator(cond)
        finally:
            self.generator.train(was_training)

    # --- losses -------------------------------------------------------------------------------
    grid_name = "pix2pix"

    def _adversarial(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        return adversarial_loss(logits, real, self.hparams.gan_mode)

    def _sample_grid(self, seg: torch.Tensor, brain: torch.Tensor, image: torch.Tensor) -> np.ndarray:
        return translation_grid(seg, image, self.translate(seg, brain, image=image))

    def _unpack(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        image = batch["image"].float()
        if image.ndim != 4 or image.shape[1] != self.hparams.out_channels:
            raise ValueError(
                f"batch['image'] must be (B, {self.hparams.out_channels}, H, W) (model.out_channels), got {tuple(image.shape)}"
            )
        return self.condition(batch["seg"], batch["brain"], image), image

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        cond, real = self._unpack(batch)
        fake = self.generator(cond)

        with self.toggled_optimizer(opt_d):
            d_real = self.discriminator(torch.cat([cond, real], dim=1))
            d_fake = self.discriminator(torch.cat([cond, fake.detach()], dim=1))
            d_loss = 0.5 * (self._adversarial(d_real, True) + self._adversarial(d_fake, False))
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()

        with self.toggled_optimizer(opt_g):
            g_adv = self._adversarial(self.discriminator(torch.cat([cond, fake], dim=1)), True)
            g_l1 = F.l1_loss(fake, real)
            g_loss = g_adv + self.hparams.l1_weight * g_l1
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()

        n = real.shape[0]
        self._keep_fixed(batch)
        self.log("train/d_loss", d_loss.detach(), prog_bar=True, batch_size=n)
        self.log("train/g_loss", g_loss.detach(), prog_bar=True, batch_size=n)
        self.log("train/g_adv", g_adv.detach(), batch_size=n)
        self.log("train/g_l1", g_l1.detach(), batch_size=n)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        cond, real = self._unpack(batch)
        fake = self.generator(cond)
        self.log("val/l1", F.l1_loss(fake, real), prog_bar=True, batch_size=real.shape[0])
        self._log_val_grid(batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        cond, real = self._unpack(batch)
        self.log("test/l1", F.l1_loss(self.generator(cond), real), batch_size=real.shape[0])

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        return [opt_g, opt_d]


def translation_grid(
    labels: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, pad: int = 2
) -> np.ndarray:
    """One row per example: colour label map | real modalities | synthetic modalities, uint8 RGB.

    Each modality is windowed by the real image's range for that example, so real and synthetic
    share one grey scale and intensity errors show."""
    labels = labels.detach().cpu()
    real = real.detach().float().cpu().numpy()
    fake = fake.detach().float().cpu().numpy()
    n, m, h, w = real.shape
    rows = []
    for i in range(n):
        tiles = [colourise(labels[i])]
        for images in (real, fake):
            for c in range(m):
                lo, hi = real[i, c].min(), real[i, c].max()
                grey = ((images[i, c] - lo) / (hi - lo + 1e-6)).clip(0, 1) * 255
                tiles.append(np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1))
        row = np.full((h, len(tiles) * (w + pad) - pad, 3), 255, dtype=np.uint8)
        for t, tile in enumerate(tiles):
            row[:, t * (w + pad) : t * (w + pad) + w] = tile
        rows.append(row)
    out = np.full((n * (h + pad) - pad, rows[0].shape[1], 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        out[i * (h + pad) : i * (h + pad) + h] = row
    return out
