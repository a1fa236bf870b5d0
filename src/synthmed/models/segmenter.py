"""LightningModule for semantic segmentation (BraTS slices, colonoscopy frames): Dice + cross-entropy loss,
IoU and Dice per region, overlays of image / truth / prediction.

Batches are dicts with `image` (B, C, H, W) and `label` (B, H, W) int64 class indices. `target` names the
regions measured: `wt`, `tc`, `et` (binary masks of that BraTS region), `multiclass` (classes 0..3 =
background, NCR/NET, ED, ET -> regions wt, tc, et) or `binary` (any 0/1 mask, region `fg`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from synthmed.data.brats.labels import REGION_INDICES, class_labels
from synthmed.models.base import SplitMetricsModule
from synthmed.visual import log_image

MULTICLASS_REGIONS = REGION_INDICES  # the BraTS regions over the mapped indices 0..3


def regions_for(target: str) -> dict[str, tuple[int, ...]]:
    if target == "multiclass":
        return dict(MULTICLASS_REGIONS)
    if target in ("wt", "tc", "et"):
        return {target: (1,)}
    if target == "binary":
        return {"fg": (1,)}
    raise ValueError(f"model.target={target!r}; expected wt, tc, et, multiclass or binary")


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes (all classes when there are only two: class 1)."""
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[1:].mean()


class SegmentationModule(SplitMetricsModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr: float,
        target: str,
        dice_weight: float,
        ce_weight: float,
        num_overlays: int,
        overlay_every: int,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net, self.optimizer_factory = net, optimizer
        self.regions = regions_for(target)
        self.num_classes = int(getattr(net, "out_channels", 2))
        needed = 4 if target == "multiclass" else 2
        if self.num_classes != needed:
            raise ValueError(f"model.target={target!r} needs model.net.out_channels={needed}, got {self.num_classes}")
        self.metrics = nn.ModuleDict({
            split: torchmetrics.MetricCollection({
                **{f"iou_{r}": torchmetrics.classification.BinaryJaccardIndex() for r in self.regions},
                **{f"dice_{r}": torchmetrics.classification.BinaryF1Score() for r in self.regions},
            }, prefix=f"{split}/")
            for split in ("train_", "val", "test")
        })
        self._overlay: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        h = self.hparams
        return h.ce_weight * F.cross_entropy(logits, target) + h.dice_weight * soft_dice_loss(logits, target)

    def region_masks(self, classes: torch.Tensor) -> dict[str, torch.Tensor]:
        return {r: torch.isin(classes, torch.tensor(c, device=classes.device)) for r, c in self.regions.items()}

    def _step(self, batch: dict[str, Any], split: str, batch_idx: int) -> torch.Tensor:
        image, target = batch["image"], batch["label"].long()
        logits = self(image)
        loss = self.loss(logits, target)
        pred = logits.max(1).indices  # = argmax(1) (first maximum on ties), ~10x faster on CPU
        key = "train_" if split == "train" else split
        pr, tr = self.region_masks(pred), self.region_masks(target)
        for r in self.regions:
            self.metrics[key][f"iou_{r}"].update(pr[r].flatten().long(), tr[r].flatten().long())
            self.metrics[key][f"dice_{r}"].update(pr[r].flatten().long(), tr[r].flatten().long())
        self.log(f"{split}/loss", loss, prog_bar=True, on_step=split == "train", on_epoch=True, batch_size=len(image))
        if split != "train" and batch_idx == 0:
            # the samples with the most foreground, so the picture shows lesions
            pick = (target > 0).flatten(1).sum(1).argsort(descending=True)[: self.hparams.num_overlays]
            self._overlay[split] = (image[pick].detach().cpu(), target[pick].cpu(), pred[pick].cpu())
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val", batch_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test", batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        every, trainer = self.hparams.overlay_every, self.trainer
        if not trainer.sanity_checking:  # counted in validations: per epoch, or every N steps (protocol=equal_steps)
            self._validations = getattr(self, "_validations", 0) + 1
            last = (0 < trainer.max_steps <= trainer.global_step) or self.current_epoch + 1 >= (trainer.max_epochs or 0)
            if every and (self._validations % every == 0 or last):
                self._log_overlay("val", step=self.current_epoch)
        self._overlay.pop("val", None)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")
        self._log_overlay("test")

    def _log_overlay(self, split: str, step: int | None = None) -> None:
        if split not in self._overlay or self.trainer is None:
            return
        image, truth, pred = self._overlay.pop(split)
        log_image(self.trainer, f"{split}/overlay", overlay_figure(image, truth, pred), step=step)
        self._log_mask_layers(f"{split}/masks", image, truth, pred, step)

    def _log_mask_layers(self, key: str, image: torch.Tensor, truth: torch.Tensor, pred: torch.Tensor,
                         step: int | None) -> None:
        """The overlay samples as W&B images with two mask layers, `ground_truth` and `prediction` (each shown
        or hidden in the W&B UI), their classes named by the label convention."""
        import numpy as np

        loggers = [lg for lg in self.trainer.loggers or [] if type(lg).__name__ == "WandbLogger"]
        if not loggers:
            return
        names = class_labels(self.hparams.target)
        masks = [{"ground_truth": {"mask_data": truth[i].numpy().astype(np.uint8), "class_labels": names},
                  "prediction": {"mask_data": pred[i].numpy().astype(np.uint8), "class_labels": names}}
                 for i in range(len(image))]
        pictures = [greyscale(image[i]) for i in range(len(image))]
        for logger in loggers:
            logger.log_image(key=key, images=pictures, step=step, masks=masks)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.parameters(), lr=self.hparams.lr)


def greyscale(image: torch.Tensor):
    """One sample (C, H, W) as a uint8 picture: its RGB when C is 3, else its first channel, min-max scaled."""
    import numpy as np

    img = image.float().numpy()
    img = img.transpose(1, 2, 0) if img.shape[0] == 3 else img[0]
    return ((img - img.min()) / (img.max() - img.min() + 1e-8) * 255).astype(np.uint8)


def overlay_figure(image: torch.Tensor, truth: torch.Tensor, pred: torch.Tensor):
    """Rows: samples; columns: image (first channel, or RGB), truth over image, prediction over image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(image)
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), dpi=80, squeeze=False)
    for i in range(n):
        img = image[i].float().numpy()
        img = img.transpose(1, 2, 0) if img.shape[0] == 3 else img[0]
        img = (img - img.min()) / (img.max() - img.min() + 1e-8)
        for j, (title, mask) in enumerate((("image", None), ("truth", truth[i]), ("prediction", pred[i]))):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            if mask is not None:
                m = mask.numpy().astype(float)
                ax.imshow(np.ma.masked_where(m == 0, m), cmap="autumn", alpha=0.5, vmin=0, vmax=3, interpolation="nearest")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
