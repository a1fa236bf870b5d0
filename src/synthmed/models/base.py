"""What every supervised LightningModule of synthmed shares."""

from __future__ import annotations

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
