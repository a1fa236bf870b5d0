"""What every supervised LightningModule of synthmed shares."""

from __future__ import annotations

from typing import Any

import lightning as L


class SplitMetricsModule(L.LightningModule):
    """`self.metrics` is a ModuleDict of MetricCollections keyed "train_", "val" and "test" ("train" is a
    reserved ModuleDict name) with prefixes train/, val/, test/: each is computed, logged and reset at the end
    of its split's epoch."""

    def _log_metrics(self, key: str) -> None:
        values = self.metrics[key].compute()
        self.log_dict({k.replace("train_/", "train/"): v for k, v in values.items()}, prog_bar=key == "val")
        self.metrics[key].reset()

    def on_train_epoch_end(self) -> None:
        self._log_metrics("train_")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")


def log_picture(trainer: Any, key: str, image: Any, step: int | None = None) -> None:
    """`synthmed.visual.log_image` (PNG under the trainer's `images/`, W&B image in every W&B logger), and also
    through loggers that forward pictures to a run's logger (`augment.gan.PrefixedLogger`: a generator trained
    inside a U-Net job shows its samples in that job's W&B run, under its prefix)."""
    from synthmed.visual import _to_uint8, figure_to_array, log_image

    if hasattr(image, "canvas"):
        image = figure_to_array(image)
    log_image(trainer, key, image, step=step)
    for logger in getattr(trainer, "loggers", []) or []:
        if getattr(logger, "forwards_images", False):
            logger.log_image(key=key, images=[_to_uint8(image)], step=step)
