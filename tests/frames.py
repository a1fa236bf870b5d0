"""A small frames dataset in the rendered-dataset layout, drawn with numpy, for framework tests.

Lesion frames carry a red disc on a pink background; the mask is the disc. It is test data for the
framework (runner, datamodule, report), not a stand-in for the renderer, which has its own tests.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def make_frames(root: Path, n: int = 40, size: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    for i in range(n):
        label = i % 2
        base = np.array([225, 150, 130]) + rng.normal(0, 12, 3)
        image = np.clip(base + rng.normal(0, 10, (size, size, 3)), 0, 255)
        mask = np.zeros((size, size), dtype=np.uint8)
        cx = cy = r = 0
        if label:
            cx, cy, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [int(rng.integers(4, size // 5))]
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
            image[disc] = [150, 40, 40]
            mask[disc] = 255
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"{i:05d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:05d}.png")
        rows.append({"id": f"{i:05d}", "seed": i, "label": label, "lesion_radius": r,
                     "visible_pixels": int((mask > 0).sum())})
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root
