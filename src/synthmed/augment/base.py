"""The interface of augmentation regimes."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset


class Augmenter:
    """Adds `extra` samples to a training set. Subclasses implement `extra_samples`.

    `replace_real=True` asks the datamodule to train on the extra samples only (an ablation such as
    `aug=synthetic_only`): the augmenter still sees the real training split (to learn from it), but the
    real slices are left out of the training set. Validation and test stay real.
    """

    name = "base"

    def __init__(self, extra: int, name: str | None, replace_real: bool) -> None:
        if int(extra) < 0:
            raise ValueError(f"aug.extra={extra} must be >= 0")
        self.extra = int(extra)
        self.replace_real = bool(replace_real)
        if self.replace_real and self.extra == 0:
            raise ValueError("aug.replace_real=true needs aug.extra > 0: the training set would be empty")
        if name is not None:
            self.name = name

    def extra_samples(self, dataset: Dataset, seed: int = 0) -> list[dict[str, Any]]:
        raise NotImplementedError


class NoAugment(Augmenter):
    """The real data only."""

    name = "none"

    def extra_samples(self, dataset: Dataset, seed: int = 0) -> list[dict[str, Any]]:
        return []
