"""Lightning callbacks shared by every experiment."""

from __future__ import annotations

import lightning as L

from synthmed.visual import log_image


class LossCurves(L.Callback):
    """Keep the epoch-level losses and draw them (train and validation) as `images/loss_curves.png`."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = tuple(keys)
        self.history: dict[str, list[tuple[int, float]]] = {k: [] for k in self.keys}

    def _record(self, trainer: L.Trainer, keys: tuple[str, ...]) -> None:
        for key in keys:
            value = trainer.callback_metrics.get(key) or trainer.callback_metrics.get(f"{key}_epoch")
            if value is not None:
                self.history[key].append((trainer.current_epoch, float(value)))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, tuple(k for k in self.keys if k.startswith("val")))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, tuple(k for k in self.keys if not k.startswith("val")))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not any(self.history.values()):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
        for key, points in self.history.items():
            if points:
                epochs, values = zip(*points, strict=True)
                ax.plot(epochs, values, marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend()
        fig.tight_layout()
        log_image(trainer, "loss_curves", fig)


class StepTimer(L.Callback):
    """Record when each training batch starts; at the end of fit write `step_times.json` (seconds between
    consecutive batches within an epoch, data loading and logging included) into the job dir.
    Add it to any run with `+callbacks.step_timer._target_=synthmed.callbacks.StepTimer`."""

    def __init__(self) -> None:
        self.gaps: list[list[float]] = []
        self._last: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.gaps.append([])
        self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import time

        now = time.perf_counter()
        if self._last is not None:
            self.gaps[-1].append(now - self._last)
        self._last = now

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from pathlib import Path

        from synthmed.utils import atomic_write_json

        atomic_write_json(Path(trainer.default_root_dir) / "step_times.json", {"epochs": self.gaps})


class StopOnNonFiniteLoss(L.Callback):
    """Stop the run with one clear error when a training or validation loss is NaN or infinite.

    A diverged run is a failure, never a result: without this, Lightning goes on, the checkpoint callback
    keeps a "best" model with loss NaN and the job ends with status ok. The error names the metric, the step
    and the learning rate; the runner writes it to `error.txt` and the job exits non-zero, so a sweep counts
    it as failed."""

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule, values: dict, when: str) -> None:
        import math

        for key, value in values.items():
            if "loss" not in key or value is None:
                continue
            number = float(value.detach().float().mean()) if hasattr(value, "detach") else float(value)
            if not math.isfinite(number):
                lr = getattr(pl_module, "hparams", {}).get("lr")
                hint = f"lower the learning rate (model.lr={lr})" if lr is not None else "lower the learning rate"
                raise FloatingPointError(
                    f"the run diverged: {key} is {number} at step {trainer.global_step} (epoch "
                    f"{trainer.current_epoch}, {when}); {hint}, or check the data")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        values = dict(trainer.callback_metrics)
        if isinstance(outputs, dict) and "loss" in outputs:
            values["train/loss (this batch)"] = outputs["loss"]
        elif outputs is not None and hasattr(outputs, "detach"):
            values["train/loss (this batch)"] = outputs
        self._check(trainer, pl_module, {k: v for k, v in values.items() if not k.startswith(("val", "test"))},
                    "training")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._check(trainer, pl_module, {k: v for k, v in trainer.callback_metrics.items()
                                             if k.startswith("val")}, "validation")


class LastCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """`<dirpath>/last.ckpt` at every validation (every epoch where there is none): the latest state, whatever the
    monitored metric did, to resume from with `ckpt_path=`. Lightning's own `save_last=True` writes last.ckpt only
    when it writes the best checkpoint, so past the best epoch it stayed there and a resume lost the epochs after
    it. A class of its own gives it its own state key beside the run's ModelCheckpoint (two of that class with no
    monitor, as in `brats_dcgan`, would share one, which Lightning refuses)."""

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1, enable_version_counter=False)
