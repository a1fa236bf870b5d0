"""Augmentation regimes: each adds `extra` training samples to a datamodule's training set.

An augmenter is any object with `extra_samples(dataset, seed) -> list[dict]` (items shaped like the
dataset's). The datamodule instantiates it from the `aug` config (`_target_`), so a GAN regime plugs in
the same way: `aug=none` (nothing), `aug=transform` (MONAI geometric transforms), later `aug=gan`.
"""

from synthmed.augment.base import Augmenter, NoAugment
from synthmed.augment.transform import TransformAugmenter

__all__ = ["Augmenter", "NoAugment", "TransformAugmenter"]
