"""The tumour generator: a DCGAN that samples BraTS-style tumour label maps from noise.

Representation. A label map with classes 0 (background), 1 (NCR/NET), 2 (ED), 3 (ET) (BraTS 0, 1, 2, 4)
is shown to the discriminator as 3 region channels (one-hot NCR, ED, ET; background implied). The
generator emits 4 logits per pixel and a softmax over them, so its region channels are probabilities
that sum (with background) to 1 — the soft version of the same one-hot. `sample()` takes the argmax.
With `binary=True` there is a single whole-tumour channel (sigmoid) and samples are 0/1.

Soft versus hard. Real maps are exactly one-hot; a softmax never is, and a discriminator can tell them
apart by softness alone. Two answers: `straight_through=True` shows D the generator's argmax as a hard
one-hot, the gradient flowing back through the softmax (the straight-through estimator); or instance
noise (`instance_noise`, annealed to 0) masks the softness while the generator learns. On the phantom's
maps the second, with one-sided label smoothing (`real_label`) and a minibatch-std channel in D
(`minibatch_std`), is what converged; straight-through drew speckle (docs/gan.md). It is the recipe in
`conf/model/dcgan.yaml` (the constructor holds no defaults: the config is the one home of every knob).

Loss: the DCGAN minimax with binary cross-entropy on logits; the generator uses the non-saturating
form (maximise log D(G(z))).
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from synthmed.data.brats.labels import NUM_CLASSES, colourise
from synthmed.models.nets.dcgan import TumourLabelDiscriminator, TumourLabelGenerator


def region_channels(labels: torch.Tensor, binary: bool = False, name: str = "label map") -> torch.Tensor:
    """(B, H, W) labels 0..3 -> (B, 3, H, W) one-hot NCR/ED/ET channels (or (B, 1, H, W) whole tumour)."""
    if labels.min() < 0 or labels.max() > NUM_CLASSES - 1:
        raise ValueError(
            f"{name} must hold labels 0..3 (BraTS 0,1,2,4 mapped), found {labels.min().item()}..{labels.max().item()}"
        )
    if binary:
        return (labels > 0).unsqueeze(1).float()
    return F.one_hot(labels.long(), NUM_CLASSES).permute(0, 3, 1, 2)[:, 1:].float()


def image_grid(tiles: np.ndarray, ncols: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """(N, H, W, 3) uint8 tiles -> one (rows*H, ncols*W, 3) uint8 picture with `pad`-pixel gutters."""
    n, h, w, c = tiles.shape
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), fill, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, ncols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = (
            tiles[k]
        )
    return grid


class TumourLabelGAN(pl.LightningModule):
    """DCGAN over tumour label maps: z ~ N(0, I) in R^latent_dim -> label map at `image_size`.

    Args are plain values so hyperparameters and checkpoints stay plain (`weights_only=True` loads).
    `image_size` is a power of two (128 at paper scale; 64, 32 work); the number of up-sampling stages
    follows from it. Real maps come from `batch["seg"]` (0..3), resized with nearest-neighbour
    interpolation when the slice size differs.
    """

    def __init__(
        self,
        image_size: int,
        latent_dim: int,
        g_channels: int,
        d_channels: int,
        max_channels: int,
        binary: bool,
        lr: float,
        betas: tuple[float, float] | list[float],
        straight_through: bool,
        instance_noise: float,
        real_label: float,
        minibatch_std: bool,
        num_samples: int,
        sample_seed: int,
    ) -> None:
        super().__init__()
        betas = tuple(float(b) for b in betas)  # a YAML list arrives as ListConfig; keep hparams plain
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = TumourLabelGenerator(latent_dim, image_size, g_channels, max_channels, binary)
        self.discriminator = TumourLabelDiscriminator(
            self.generator.out_channels, image_size, d_channels, max_channels, minibatch_std
        )

    # --- data -> maps ---------------------------------------------------------------------------
    def real_maps(self, seg: torch.Tensor) -> torch.Tensor:
        """(B, H, W) labels 0..3 -> (B, C, S, S) float region channels at `image_size`."""
        if seg.ndim != 3:
            raise ValueError(f"batch['seg'] must be (B, H, W), got shape {tuple(seg.shape)}")
        maps = region_channels(seg, self.hparams.binary, name="batch['seg']")
        size = self.hparams.image_size
        if maps.shape[-2:] != (size, size):
            maps = F.interpolate(maps, size=(size, size), mode="nearest-exact")
        return maps

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = generator.device if generator is not None else self.device
        return torch.randn(n, self.hparams.latent_dim, generator=generator, device=device).to(self.device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Soft tumour maps (B, C, S, S) in [0, 1] for noise z (B, latent_dim)."""
        return self.generator(z)

    def maps_to_labels(self, maps: torch.Tensor) -> torch.Tensor:
        """Soft (or one-hot) region maps (B, C, S, S) -> labels (B, S, S) int64 in 0..3 (0/1 if binary)."""
        if self.hparams.binary:
            return (maps[:, 0] > 0.5).long()
        background = 1.0 - maps.sum(dim=1, keepdim=True)
        return torch.cat([background, maps], dim=1).argmax(dim=1)

    def fake_maps(self, z: torch.Tensor) -> torch.Tensor:
        """The maps the discriminator judges during training. With `straight_through`, the hard one-hot of
        the generator's argmax in the forward pass and the softmax's gradient in the backward pass: D
        then sees fakes exactly as discrete as the real one-hots, and cannot win on softness alone."""
        soft = self.generator(z)
        if not self.hparams.straight_through:
            return soft
        if self.hparams.binary:
            hard = (soft > 0.5).float()
        else:
            hard = F.one_hot(self.maps_to_labels(soft), NUM_CLASSES).permute(0, 3, 1, 2)[:, 1:].to(soft.dtype)
        return hard + soft - soft.detach()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, batch_size: int = 64,
               size: int | None = None) -> torch.Tensor:
        """`n` tumour label maps (n, size, size) int64 with values 0 (background), 1 NCR/NET, 2 ED, 3 ET
        (BraTS 0, 1, 2, 4), on the module's device. Runs the generator in eval mode (batch norm uses its
        running statistics, so a map does not depend on its batch-mates); the same seeded
        `torch.Generator` gives the same maps, whatever `batch_size`. Restores the previous mode.

        `size` (default: the generator's own `image_size`, S): the soft maps are resized bilinearly to it before
        the argmax, so a map drawn at S = 64 and wanted at 128 gets smooth region edges, not the 2x2 blocks
        of resizing the labels."""
        size = int(size or self.hparams.image_size)
        was_training = self.generator.training
        self.generator.eval()
        try:
            z = self.noise(n, generator)
            out = [self.maps_to_labels(self._resized(self.generator(chunk), size)) for chunk in z.split(batch_size)]
        finally:
            self.generator.train(was_training)
        return torch.cat(out) if out else torch.empty(0, size, size, dtype=torch.long, device=self.device)

    @staticmethod
    def _resized(maps: torch.Tensor, size: int) -> torch.Tensor:
        if maps.shape[-1] == size:
            return maps
        return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)

    # --- training -----------------------------------------------------------------------------
    def noise_std(self) -> float:
        """Std of the instance noise added to every map D sees: `instance_noise`, annealed linearly to 0
        over the run (D cannot win early on details no generator has yet; it sees them clearly later)."""
        trainer = self._trainer
        if not self.hparams.instance_noise or trainer is None or not trainer.max_epochs or trainer.max_epochs < 0:
            return float(self.hparams.instance_noise)
        done = self.current_epoch / trainer.max_epochs
        return float(self.hparams.instance_noise) * max(0.0, 1.0 - done)

    def _judge(self, maps: torch.Tensor) -> torch.Tensor:
        std = self.noise_std()
        return self.discriminator(maps + std * torch.randn_like(maps) if std > 0 else maps)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = self.real_maps(batch["seg"])
        n = real.shape[0]
        fake = self.fake_maps(self.noise(n))
        ones = torch.ones(n, device=self.device)
        zeros = torch.zeros(n, device=self.device)

        # discriminator: real -> real_label (1, or less for one-sided smoothing), fake -> 0 (fake detached)
        with self.toggled_optimizer(opt_d):
            d_loss = 0.5 * (
                F.binary_cross_entropy_with_logits(self._judge(real), ones * self.hparams.real_label)
                + F.binary_cross_entropy_with_logits(self._judge(fake.detach()), zeros)
            )
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()

        # generator: non-saturating loss, make D call the fakes real
        with self.toggled_optimizer(opt_g):
            g_loss = F.binary_cross_entropy_with_logits(self._judge(fake), ones)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()

        self.log("train/d_loss", d_loss.detach(), prog_bar=True, batch_size=n)
        self.log("train/g_loss", g_loss.detach(), prog_bar=True, batch_size=n)

    def on_train_epoch_end(self) -> None:
        from synthmed.visual import grid_epoch, log_image

        if self.trainer is None or self.trainer.sanity_checking or not grid_epoch(self.trainer):
            return
        n = self.hparams.num_samples
        rng = torch.Generator().manual_seed(
            self.hparams.sample_seed
        )  # same noise every epoch: watch it evolve
        labels = self.sample(n, generator=rng)
        grid = image_grid(colourise(labels), ncols=int(np.ceil(np.sqrt(n))))
        log_image(self.trainer, "samples/tumour_maps", grid, step=self.current_epoch)

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        return [opt_g, opt_d]
