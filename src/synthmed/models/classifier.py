"""LightningModule for frame classification (normal vs lesion): losses, metrics, pictures."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from synthmed.models.base import SplitMetricsModule
from synthmed.visual import log_image

log = logging.getLogger(__name__)

LOSSES = ("cross_entropy", "mse_softmax")


class LesionClassifier(SplitMetricsModule):
    """Wraps a plain classification net (e.g. `LesionCNN`).

    loss: `cross_entropy` (default) or `mse_softmax`, the study's mean squared error between the softmax and
    the one-hot label. Logs loss, accuracy, AUROC and F1 per split, and for the test split also recall
    (sensitivity) and specificity, each only where the test frames hold the classes it needs; a confusion-matrix
    picture and the first misclassified test frames; writes every test frame's prediction to
    `predictions_file` in the output dir.

    `mask_weight` > 0 (not in the study) adds that times a binary cross-entropy between the net's mask head
    (`forward_with_mask`) and the frame's lesion mask, max-pooled to the head's cells, wherever batches carry a
    `"mask"` (rendered and Kvasir-SEG frames): the net is told where the lesion is, not only whether, which is
    what lets it learn on frames where no colour gives the lesion away (docs/render.md).

    `scheduler` (not in the study), a partial torch LR scheduler taking the optimiser, is stepped once per epoch.
    `warmup_steps` > 0 (not in the study) scales the learning rate of the first that many optimiser steps by
    1/n, 2/n, ... up to 1, on top of whatever the scheduler sets: large early Adam steps can kill the study's
    un-normalised ReLU net in its first epoch (docs/render.md, "A net that dies, and a warm-up").
    """

    MAX_ERRORS_SHOWN = 16
    # A file name, not a knob: the runner names it predictions.csv in a test-only run (experiment=colon_eval).

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr: float,
        loss: str,
        freeze_features: bool,
        table_images: int,
        predictions_file: str,
        mask_weight: float,
        scheduler: Callable[..., Any] | None = None,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"model.loss={loss!r}; expected one of {LOSSES}")
        if int(warmup_steps) < 0:
            raise ValueError(f"model.warmup_steps={warmup_steps} must be >= 0")
        if float(mask_weight) < 0:
            raise ValueError(f"model.mask_weight={mask_weight} must be >= 0")
        if float(mask_weight) > 0 and getattr(net, "mask_head", None) is None:
            raise ValueError(f"model.mask_weight={mask_weight} trains the net's mask head, but it has none: set "
                             "model.net.mask_head=true")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.predictions_file = predictions_file
        self.net, self.optimizer_factory, self.scheduler_factory = net, optimizer, scheduler
        self.num_classes = net.head[-1].out_features if hasattr(net, "head") else 2
        task = "binary" if self.num_classes == 2 else "multiclass"
        kwargs = {"task": task} if task == "binary" else {"task": task, "num_classes": self.num_classes}
        self.metrics = nn.ModuleDict({
            split: torchmetrics.MetricCollection({
                "acc": torchmetrics.Accuracy(**kwargs),
                "auroc": torchmetrics.AUROC(**kwargs),
                "f1": torchmetrics.F1Score(**kwargs),
            }, prefix=f"{split}/")
            for split in ("train_", "val", "test")  # "train" is a reserved ModuleDict attribute name
        })
        self.confusion = torchmetrics.ConfusionMatrix(**kwargs)
        self.on_test_epoch_start()  # the per-frame test records, also when test_step is called directly
        if freeze_features:
            self.freeze_features()

    def freeze_features(self) -> None:
        """Fine-tuning: keep the convolutional feature extractor fixed and train only the head."""
        for p in self.net.features.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "mse_softmax":
            return F.mse_loss(logits.softmax(1), F.one_hot(target, self.num_classes).float())
        return F.cross_entropy(logits, target)

    def _step(self, batch: dict[str, Any], split: str) -> torch.Tensor:
        target = batch["label"]
        if self.hparams.mask_weight > 0 and "mask" in batch:
            logits, mask_logits = self.net.forward_with_mask(batch["image"])
            cells = F.adaptive_max_pool2d(batch["mask"][:, None].float(), mask_logits.shape[-2:])[:, 0]
            mask_loss = F.binary_cross_entropy_with_logits(mask_logits, cells)
            self.log(f"{split}/mask_loss", mask_loss, on_step=False, on_epoch=True, batch_size=len(target))
            loss = self._loss(logits, target) + self.hparams.mask_weight * mask_loss
        else:
            logits = self(batch["image"])
            loss = self._loss(logits, target)
        scores = logits.softmax(1)
        scores = scores[:, 1] if self.num_classes == 2 else scores
        key = "train_" if split == "train" else split
        self.metrics[key].update(scores, target)
        on_step = split == "train"
        self.log(f"{split}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=len(target))
        if split == "test":
            self.confusion.update(scores, target)
            self._collect_test(batch, scores.detach(), target)
        return loss

    def _collect_test(self, batch: dict[str, Any], scores: torch.Tensor, target: torch.Tensor) -> None:
        """Per-frame test predictions (for test_predictions.csv) and the first misclassified frames."""
        if self.num_classes == 2:
            pred, score = (scores >= 0.5).long(), scores
        else:
            score, pred = scores.max(1)
        ids = batch.get("id", [str(len(self._test_rows) + k) for k in range(len(target))])
        paths = batch.get("path", [""] * len(target))
        wrong = set((pred != target).nonzero().flatten().tolist())
        rows = zip(ids, target.tolist(), pred.tolist(), score.tolist(), paths, strict=True)
        for k, (i, t, p_, s_, path) in enumerate(rows):
            self._test_rows.append((str(i), int(t), int(p_), float(s_), str(path)))
            if len(self._test_images) < self.hparams.table_images:  # the frame as the table shows it
                image = batch["image"][k].detach().cpu().permute(1, 2, 0).numpy() * 0.5 + 0.5
                self._test_images.append((image.clip(0, 1) * 255).round().astype(np.uint8))
            if k in wrong and len(self._test_errors) < self.MAX_ERRORS_SHOWN:
                self._test_errors.append((batch["image"][k].detach().cpu(), int(t), float(s_)))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_test_epoch_start(self) -> None:
        self._test_rows: list[tuple[str, int, int, float, str]] = []
        self._test_images: list[np.ndarray] = []
        self._test_errors: list[tuple[torch.Tensor, int, float]] = []

    def on_test_epoch_end(self) -> None:
        matrix = self.confusion.compute().cpu().numpy()
        self.confusion.reset()
        self._log_test_metrics(matrix)
        self._log_confusion(matrix)
        self._write_predictions()
        self._log_prediction_table()
        self._log_errors()

    def _log_test_metrics(self, matrix: np.ndarray) -> None:
        """The test metrics of the collection, and for two classes recall (sensitivity) and specificity from the
        confusion matrix `matrix` (rows: true class). A metric the test frames cannot define is left out, not
        logged as a made-up number: AUROC needs both classes, recall lesion frames, specificity normal ones
        (e.g. a folder of lesion frames only reports accuracy, F1 and recall). `test/predicted_classes` counts the
        classes the net predicted at all; one, on frames of several classes, is warned about: its accuracy is only
        that class's share, and a net whose output stopped depending on the frame (a collapsed run) ends so."""
        present = matrix.sum(1) > 0
        predicted = np.flatnonzero(matrix.sum(0) > 0)
        if present.sum() > 1 and len(predicted) == 1:
            log.warning("every one of the %d test frames was predicted class %d, although they hold %d classes: the "
                        "accuracy %.3f is that class's share, no better than always answering it. A net whose output "
                        "stopped depending on the frame (collapsed, e.g. dead ReLUs in the study's un-normalised net) "
                        "ends so: see the run's val/auroc, and docs/render.md", int(matrix.sum()), int(predicted[0]),
                        int(present.sum()), float(matrix[predicted[0], predicted[0]] / matrix.sum()))
        values = {f"test/{name}": metric.compute() for name, metric in self.metrics["test"].items(keep_base=True)
                  if name != "auroc" or present.all()}
        self.metrics["test"].reset()
        if self.num_classes == 2:
            (tn, fp), (fn, tp) = matrix
            if present[1]:
                values["test/recall"] = float(tp / (tp + fn))
            if present[0]:
                values["test/specificity"] = float(tn / (tn + fp))
        values["test/predicted_classes"] = float(len(predicted))
        self.log_dict(values)

    def _write_predictions(self) -> None:
        """`<output dir>/<predictions_file>`: id, label, predicted, score (P(lesion) for two classes), path (the
        frame's file), to join with a rendered dataset's manifest.csv (which frames fail: small, far, pale
        lesions?). Under DDP it holds rank 0's share of the test set."""
        root = getattr(self.trainer, "default_root_dir", None)
        if root is None or not self.trainer.is_global_zero:
            return
        import csv
        import io

        from synthmed.utils import atomic_write_text

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")  # ids may hold commas or quotes
        writer.writerow(["id", "label", "predicted", "score", "path"])
        writer.writerows([i, t, p, f"{s:.6f}", path] for i, t, p, s, path in self._test_rows)
        atomic_write_text(Path(root) / self.predictions_file, buffer.getvalue())

    def _log_prediction_table(self) -> None:
        """W&B table `test/predictions`: every test frame (id, label, prediction, score, correct, its picture for
        the first `table_images`), joined with the render manifest's parameters (lesion type, size, colour,
        visible pixels, scene) when the frames are a rendered dataset, so the misses can be filtered and grouped
        by parameter in the W&B UI. The dataset's preview sheet goes along as `data/preview`."""
        from synthmed import tracking

        loggers = getattr(self.trainer, "loggers", [])
        if not tracking.wandb_runs(loggers) or not self.trainer.is_global_zero:
            return
        root = getattr(getattr(self.trainer, "datamodule", None), "root", None)
        manifest: dict[str, dict[str, str]] = {}
        if root is not None and (Path(root) / "manifest.csv").is_file():
            import csv

            with (Path(root) / "manifest.csv").open(newline="") as f:
                manifest = {row["id"]: row for row in csv.DictReader(f)}
        extra = [c for c in next(iter(manifest.values()), {}) if c not in ("id", "label")]
        rows = [[i, t, p, round(s, 6), int(t == p), *(manifest.get(i, {}).get(c) for c in extra)]
                for i, t, p, s, _ in self._test_rows]
        images = self._test_images + [None] * (len(rows) - len(self._test_images))
        tracking.log_table(loggers, "test/predictions", ["id", "label", "predicted", "score", "correct", *extra],
                           rows, images={"frame": images})
        if root is not None and (Path(root) / "preview.png").is_file():
            from PIL import Image

            log_image(self.trainer, "data/preview", np.asarray(Image.open(Path(root) / "preview.png").convert("RGB")))

    def _log_errors(self) -> None:
        """A picture of the first misclassified test frames, each titled with its label and score."""
        if not self._test_errors:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = min(8, len(self._test_errors))
        rows = (len(self._test_errors) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), dpi=100, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, (image, label, score) in zip(axes.flat, self._test_errors, strict=False):
            array = image.permute(1, 2, 0).numpy() * 0.5 + 0.5  # the datamodule's [-1, 1] back to [0, 1]
            ax.imshow(array.clip(0, 1).squeeze())
            ax.set_title(f"true {label}  p={score:.2f}", fontsize=7)
        fig.suptitle("misclassified test frames", fontsize=8)
        fig.tight_layout()
        log_image(self.trainer, "test/errors", fig)

    def _log_confusion(self, matrix: np.ndarray) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = ["normal", "lesion"] if self.num_classes == 2 else [str(i) for i in range(self.num_classes)]
        fig, ax = plt.subplots(figsize=(3.4, 3.0), dpi=100)
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, int(value), ha="center", va="center", color="black")
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("test confusion matrix")
        fig.tight_layout()
        log_image(self.trainer, "test/confusion_matrix", fig)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params, lr=self.hparams.lr)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                         "interval": "epoch"}}

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        n, step = int(self.hparams.warmup_steps), self.trainer.global_step
        if step >= n:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        groups = optimizer.param_groups  # scale this step's lr only; the scheduler keeps seeing its own values
        kept = [group["lr"] for group in groups]
        for group in groups:
            group["lr"] *= (step + 1) / n
        try:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        finally:
            for group, lr in zip(groups, kept, strict=True):
                group["lr"] = lr
