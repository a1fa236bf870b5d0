"""Geometric augmentation: `extra` new samples, each a random training sample passed through MONAI
dictionary transforms (flips, rotation, scaling, elastic deformation) applied to image and masks together."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from synthmed.augment.base import Augmenter

MASK_KEYS = ("label", "seg", "brain")


class TransformAugmenter(Augmenter):
    name = "transform"

    def __init__(self, extra: int, name: str, flip_prob: float, rotate_deg: float, scale: float, elastic_prob: float,
                 elastic_sigma: tuple[float, float], elastic_magnitude: tuple[float, float], replace_real: bool) -> None:
        super().__init__(extra, name, replace_real)
        self.flip_prob, self.rotate_deg, self.scale = float(flip_prob), float(rotate_deg), float(scale)
        self.elastic_prob = float(elastic_prob)
        self.elastic_sigma, self.elastic_magnitude = tuple(elastic_sigma), tuple(elastic_magnitude)

    def transforms(self, keys: list[str]):
        from monai import transforms as T

        modes = ["bilinear" if k == "image" else "nearest" for k in keys]
        rad = np.deg2rad(self.rotate_deg)
        return T.Compose([
            T.RandFlipd(keys, prob=self.flip_prob, spatial_axis=0),
            T.RandFlipd(keys, prob=self.flip_prob, spatial_axis=1),
            T.RandAffined(keys, prob=1.0, rotate_range=(rad,), scale_range=(self.scale, self.scale),
                          mode=modes, padding_mode="zeros"),
            T.Rand2DElasticd(keys, spacing=(32, 32), magnitude_range=self.elastic_magnitude,
                             prob=self.elastic_prob, mode=modes, padding_mode="zeros"),
        ])

    def extra_samples(self, dataset: Dataset, seed: int = 0) -> list[dict[str, Any]]:
        if self.extra == 0 or len(dataset) == 0:
            return []
        rng = np.random.default_rng([seed, 7])
        picks = rng.integers(0, len(dataset), self.extra)
        first = dataset[0]
        keys = ["image", *[k for k in MASK_KEYS if k in first]]
        pipeline = self.transforms(keys)
        pipeline.set_random_state(seed=int(rng.integers(2**31)))
        out = []
        for i in picks:
            item = dict(dataset[int(i)])
            data = {}
            for k in keys:
                v = torch.as_tensor(item[k]).float()
                data[k] = v if v.ndim == 3 else v[None]
            res = pipeline(data)
            for k in keys:
                v = res[k]
                v = v.as_tensor() if hasattr(v, "as_tensor") else torch.as_tensor(np.asarray(v))
                if k == "image":
                    item[k] = v.float().contiguous()
                elif k == "brain":
                    item[k] = v.float().round().contiguous()
                else:
                    item[k] = v[0].round().long().contiguous()
            item["subject"] = f"{item.get('subject', 'sample')}+{self.name}"
            out.append(item)
        return out
