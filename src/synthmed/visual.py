"""Pictures: save them in the job's output dir and log them to W&B when a W&B logger is attached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_EPOCH_GRIDS = 200  # sample grids one training run draws at most, at its epoch ends


def grid_epoch(trainer: Any) -> bool:
    """Whether this epoch end draws a sample grid: every epoch of a schedule of up to `MAX_EPOCH_GRIDS` epochs;
    on a longer one (a generator trained on a small real set: synthmed.augment.gan.generator_epochs) every k-th
    epoch so that at most that many are drawn, and the last epoch always. Drawing reads no random stream, so
    the grids drawn never change what is trained."""
    epochs = int(getattr(trainer, "max_epochs", None) or -1)
    if epochs <= MAX_EPOCH_GRIDS:
        return True
    every = -(-epochs // MAX_EPOCH_GRIDS)
    return trainer.current_epoch % every == 0 or trainer.current_epoch == epochs - 1


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
        image = ((image - lo) / (hi - lo + 1e-12) * 255.0).clip(0, 255).astype(np.uint8)
    return image


def figure_to_array(fig: Any) -> np.ndarray:
    """Render a matplotlib figure into an RGB uint8 array (and close it)."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return array


def log_image(trainer: Any, key: str, image: Any, step: int | None = None, caption: str | None = None) -> Path | None:
    """Save `image` (HxW, HxWx3 array or matplotlib figure) as `<output_dir>/images/<key>[_<step>].png`
    and log it to every W&B logger of `trainer`. Returns the PNG path (None without an output dir)."""
    from PIL import Image

    if hasattr(image, "canvas"):
        image = figure_to_array(image)
    array = _to_uint8(image)
    path = None
    root = getattr(trainer, "default_root_dir", None)
    if root is not None and getattr(trainer, "is_global_zero", True):
        name = key.replace("/", "_") + (f"_{step:04d}" if step is not None else "") + ".png"
        path = Path(root) / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    for logger in getattr(trainer, "loggers", []) or []:
        # W&B loggers, and loggers that forward pictures to a run's W&B logger (tracking.PrefixedLogger: a
        # generator trained inside a U-Net job shows its samples in that job's run, under its prefix)
        if type(logger).__name__ == "WandbLogger" or getattr(logger, "forwards_images", False):
            extra = {"caption": [caption]} if caption else {}
            logger.log_image(key=key, images=[array], step=step, **extra)
    return path
