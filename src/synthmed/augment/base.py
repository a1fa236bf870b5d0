"""The interface of augmentation regimes."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset


class Augmenter:
    """Adds `extra` samples to a training set. Subclasses implement `extra_samples`."""

    name = "base"

    def __init__(self, extra: int = 0, name: str | None = None) -> None:
        if int(extra) < 0:
            raise ValueError(f"aug.extra={extra} must be >= 0")
        self.extra = int(extra)
        if name is not None:
            self.name = name

    def extra_samples(self, dataset: Dataset, seed: int = 0) -> list[dict[str, Any]]:
        raise NotImplementedError


class NoAugment(Augmenter):
    """The real data only."""

    name = "none"

    def extra_samples(self, dataset: Dataset, seed: int = 0) -> list[dict[str, Any]]:
        return []
