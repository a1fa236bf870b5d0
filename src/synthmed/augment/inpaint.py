"""`aug=gan_inpaint`: synthetic tumours painted into real anatomy (the stage `brats_inpaint_pairs`).

1. The real training split of the job's data config (as `aug=gan`), and the generators trained on it, each
   its own artefact (`synthmed.augment.gan.load_generators`): the tumour painter (`TumourInpainter`), and with
   `tumours=dcgan` the DCGAN tumour generator (the very artefact `aug=gan` uses for the same seed).
2. Tumour label maps (`tumours`): by default the real split's own maps, each flipped, turned, scaled and warped
   into a new shape (`RealTumours` with `deform`); or sampled from the DCGAN (resized to the slices); or the real
   ones as they are (`real`). Each is placed into the brain of a real training slice (`source`: any slice, or
   only those without tumour) at a random shift that keeps every tumour pixel inside the brain; maps failing the
   degeneracy rule of `aug=gan` are dropped.
3. Region = the placed tumour dilated by the painter's `dilate` pixels, inside the brain. The new label is the
   real one outside the region and the synthetic map inside it; the painter repaints the region, every pixel
   outside it stays the real slice's.

`<data_dir>/gan/inpaint_pairs/<hash>/pairs.npz` holds image, seg, brain, region (N, 1, H, W float32 0/1) and
source (the index of the real training slice each pair was painted into), + `pairs.png` (real slice, region,
painted slice). `GanAugmenter` loads it like the `aug=gan` pairs (the region stays in the file).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import Logger

from synthmed.augment import gan
from synthmed.data.brats import labels
from synthmed.utils import atomic_path, config_hash, to_plain

log = logging.getLogger(__name__)

SOURCES = ("any", "tumour_free")
TUMOURS = ("dcgan", "real", "deformed")


class RealTumours:
    """`aug.pairs.tumours=real`: the tumour maps of the real training slices, drawn at random, in the DCGAN's
    place (the same `sample` call). Only the painter is learnt: the painted regions hold real tumour shapes, so
    `brats_embed`'s region numbers measure the painter alone (with `dcgan`: the painter and the DCGAN's shapes);
    as an augmentation it is a real tumour moved into another place and repainted there.

    `deform` (`aug.pairs.tumours=deformed`, the knobs of `aug.pairs.deform`): each drawn map is centred, flipped
    at random, then rotated, scaled and elastically warped (MONAI's `Rand2DElastic`, nearest, so the labels stay
    labels and their nesting stays): a new tumour shape, with the real maps' region structure and edges."""

    def __init__(self, seg: torch.Tensor, deform: Mapping[str, Any] | None = None) -> None:
        self.maps = seg[(seg > 0).flatten(1).any(1)]
        self.name = "real" if deform is None else "deformed"  # the aug.pairs.tumours value, for the errors
        if not len(self.maps):
            raise ValueError(f"aug.pairs.tumours={self.name}: the real training split holds no slice with tumour")
        self.warp = None
        if deform is not None:
            from monai.transforms import Rand2DElastic

            low, high = (float(v) for v in deform["scale"])
            if not 0 < low <= high:
                raise ValueError(f"aug.pairs.deform.scale={[low, high]} must be 0 < low <= high")
            self.warp = Rand2DElastic(spacing=float(deform["elastic_spacing"]),
                                      magnitude_range=tuple(float(v) for v in deform["elastic_magnitude"]),
                                      prob=1.0, rotate_range=math.radians(float(deform["rotate_deg"])),
                                      scale_range=(low - 1.0, high - 1.0), mode="nearest", padding_mode="zeros")

    def sample(self, n: int, generator: torch.Generator | None = None, size: int | None = None) -> torch.Tensor:
        if size is not None and size != self.maps.shape[-1]:
            raise ValueError(f"aug.pairs.tumours={self.name}: the real maps are {self.maps.shape[-1]} px, not {size}")
        maps = self.maps[torch.randint(len(self.maps), (n,), generator=generator)]
        if self.warp is None:
            return maps
        # the warp's own random stream, seeded from `generator`: the same seed gives the same shapes
        self.warp.set_random_state(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        flips = torch.rand(n, 2, generator=generator) < 0.5
        out = []
        for label_map, (flip_rows, flip_cols) in zip(maps, flips.tolist(), strict=True):
            label_map = centred(label_map)
            if flip_rows:
                label_map = label_map.flip(0)
            if flip_cols:
                label_map = label_map.flip(1)
            warped = self.warp(label_map[None].float())
            out.append(torch.as_tensor(np.asarray(warped))[0].round().long())
        return torch.stack(out)


def centred(label_map: torch.Tensor) -> torch.Tensor:
    """The (H, W) map with its tumour's bounding box moved to the middle (turns and scaling then keep it in)."""
    rows, cols = torch.nonzero(label_map > 0, as_tuple=True)
    shift = ((label_map.shape[0] - 1) // 2 - (int(rows.min()) + int(rows.max())) // 2,
             (label_map.shape[1] - 1) // 2 - (int(cols.min()) + int(cols.max())) // 2)
    return torch.roll(label_map, shift, dims=(0, 1))


def inpaint_pairs(data: Mapping[str, Any], dcgan: Mapping[str, Any], inpaint: Mapping[str, Any], dcgan_epochs: int,
                  inpaint_epochs: int, batch_size: int, trainer: Mapping[str, Any],
                  generators: Mapping[str, Any] | None, extra: int, source: str, min_tumour_pixels: int,
                  max_tumour_fraction: float, max_components: int | None, max_tries: int, data_dir: str | Path,
                  loggers: list[Logger] | None = None, epochs_at: int | None = None, *, tumours: str,
                  map_upsample: str, deform: Mapping[str, Any] | None) -> Path:
    """The pairs file of `aug=gan_inpaint`: `extra` real training slices with a tumour painted in by the inpainter
    (`tumours`: the real split's maps deformed or moved, or DCGAN samples), the generators trained on the real
    training split of `data` (or loaded from `generators`; their
    epochs as `gan.generator_epochs` gives them), found
    by the hash of what produced them or made first (under locks). The global RNGs are left as they were."""
    if source not in SOURCES:
        raise ValueError(f"aug.pairs.source={source!r} must be one of {list(SOURCES)}")
    if tumours not in TUMOURS:
        raise ValueError(f"aug.pairs.tumours={tumours!r} must be one of {list(TUMOURS)}")
    if tumours != "dcgan" and "dcgan" in (to_plain(generators) or {}):
        raise ValueError(f"aug.generators.dcgan: aug.pairs.tumours={tumours} paints no DCGAN maps (the generators "
                         f"of this regime are ['inpaint']; aug.pairs.tumours=dcgan uses a DCGAN)")
    # checked before any work, on every route (a typo fails), though only the DCGAN's maps are resized: real maps
    # are at the slices' size already, and their key keeps no map_upsample
    rule = {**gan.sampling_rule(extra, min_tumour_pixels, max_tumour_fraction, max_components, max_tries, map_upsample),
            "source": source}
    if tumours != "dcgan":
        rule.pop("map_upsample", None)
    since = time.time()
    with gan._global_rng_untouched():
        datamodule = gan.real_training_split(data)
        slices = gan._training_slices(datamodule.real_train)
        seed = datamodule.split_seed
        configs = {"dcgan": to_plain(dcgan), "inpaint": to_plain(inpaint)}
        epochs = gan.generator_epochs({"dcgan": dcgan_epochs, "inpaint": inpaint_epochs}, len(slices["seg"]),
                                      epochs_at)
        if tumours != "dcgan":  # no tumour generator to train or load
            del configs["dcgan"], epochs["dcgan"]
        given = gan.given_generators(generators, list(configs))
        keys = gan.generator_keys(configs, epochs, int(batch_size), seed, gan._digest(slices), given)
        config = {"route": "inpaint", "generators": keys, "rule": rule}
        if tumours != "dcgan":  # (the DCGAN route's key, and so its cached pairs, as before this option)
            config["tumours"] = tumours
        if tumours == "deformed":
            if deform is None:
                raise ValueError("aug.pairs.tumours=deformed needs aug.pairs.deform (rotate_deg, scale, "
                                 "elastic_spacing, elastic_magnitude)")
            config["deform"] = to_plain(deform)
        extra_meta: dict[str, Any] = {"labels": labels.convention()}

        pool = source_slices(slices["seg"], source)  # checked before anything is made

        def make(out: Path) -> None:
            if rule["extra"] == 0:  # nothing to draw: no generator is trained
                pairs = {**gan.empty_pairs(slices), "region": np.zeros((0, *slices["brain"].shape[1:]), np.float32),
                         "source": np.zeros(0, np.int64)}
                counts = {"kept": 0, "dropped": 0}
            else:
                modules = gan.load_generators(slices, seed, configs, keys, int(batch_size), trainer, given,
                                              Path(data_dir), list(loggers or []))
                maps = (modules["dcgan"] if tumours == "dcgan" else
                        RealTumours(slices["seg"], config.get("deform")))
                pairs, counts = paint_pairs(maps, modules["inpaint"], slices, pool, seed, rule, out)
            with atomic_path(out / gan.PAIRS_FILE) as tmp, open(tmp, "wb") as f:
                np.savez(f, **pairs)
            if len(pairs["seg"]):
                save_picture(out / "pairs.png", pairs, slices["image"])
            extra_meta.update(counts=counts, generators={k: str(v) for k, v in given.items()})

        from synthmed import artifacts

        folder = artifacts.ensure(Path(data_dir) / "gan" / "inpaint_pairs" / config_hash(config),
                                  "brats_inpaint_pairs", config, make, extra_meta)
    gan.tell_the_run(list(loggers or []), folder, gan.trained_folders(data_dir, keys, given), since)
    return folder / gan.PAIRS_FILE


def source_slices(seg: torch.Tensor, source: str) -> torch.Tensor:
    """Indices of the real training slices a tumour may be painted into: all (`any`) or those without tumour."""
    if source == "any":
        pool = torch.arange(len(seg))
    else:
        pool = torch.nonzero(~(seg > 0).flatten(1).any(1)).flatten()
    if len(pool) == 0:
        raise ValueError(f"aug.pairs.source={source}: the real training split holds no slice to paint into"
                         + (" without tumour (data.empty_fraction sets their share; 0 keeps none): raise "
                            "data.empty_fraction or set aug.pairs.source=any" if source == "tumour_free" else ""))
    return pool


def place_inside(label_map: torch.Tensor, brain: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The tumour of `label_map` (H, W) moved by a random shift to where every tumour pixel lies inside `brain`
    (H, W) (uniform over such shifts, drawn from `generator`). When it fits nowhere, the shift that leaves the
    fewest pixels outside, and those are cut off (the degeneracy rule then judges what is left)."""
    tumour = label_map > 0
    if not tumour.any():
        return torch.zeros_like(label_map)
    rows, cols = torch.nonzero(tumour, as_tuple=True)
    top, bottom, left, right = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    patch = label_map[top:bottom, left:right]
    # outside[y, x]: tumour pixels that would fall outside the brain with the patch's corner at (y, x) (exact
    # integer counts in float32: no rounding, the same on every run)
    kernel = (patch > 0).float()[None, None]
    outside = F.conv2d((brain <= 0).float()[None, None], kernel)[0, 0]
    fits = torch.nonzero(outside == 0)
    if len(fits):
        y, x = fits[int(torch.randint(len(fits), (1,), generator=generator))].tolist()
    else:
        y, x = divmod(int(torch.argmin(outside.flatten())), outside.shape[1])
    placed = torch.zeros_like(label_map)
    placed[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
    return placed * (brain > 0)


def paint_pairs(tumour_gan: Any, inpainter: Any, data: dict[str, torch.Tensor], pool: torch.Tensor, seed: int,
                rule: dict[str, Any], folder: Path, batch: int = 64) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """`rule["extra"]` pairs: maps of `tumour_gan` (the DCGAN, or `RealTumours`) placed into real slices of
    `pool`, painted in by `inpainter`."""
    extra = rule["extra"]
    generator = torch.Generator().manual_seed(seed)

    def place(maps: torch.Tensor, brains: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return torch.stack([place_inside(m, b[0], rng) for m, b in zip(maps, brains, strict=True)])

    tumour, source, dropped = gan.keep_label_maps(tumour_gan, data["brain"], pool, rule, generator, place,
                                                  "gan_inpaint", folder)
    image, real_seg, brain = data["image"][source], data["seg"][source], data["brain"][source]
    region = inpainter.region(tumour, brain).cpu()
    seg = torch.where(region[:, 0] > 0, tumour, real_seg)  # synthetic inside the region, real outside
    painted = []
    for start in range(0, extra, batch):
        part = slice(start, start + batch)
        painted.append(inpainter.paint(image[part], seg[part], brain[part], region[part], generator=generator).cpu())
        log.info("aug=gan_inpaint: painted %d of %d slices", min(start + batch, extra), extra)
    pairs = {"image": torch.cat(painted).numpy().astype(np.float32), "seg": seg.numpy().astype(np.int64),
             "brain": brain.numpy().astype(np.float32), "region": region.numpy().astype(np.float32),
             "source": source.numpy().astype(np.int64)}
    return pairs, {"kept": len(tumour), "dropped": dropped}


def save_picture(path: Path, pairs: dict[str, np.ndarray], real: torch.Tensor, n: int = 8) -> None:
    """Three rows: the real slice (first modality), its new label map with the region shaded, the painted slice."""
    from PIL import Image

    n = min(n, len(pairs["seg"]))
    before = real[torch.as_tensor(pairs["source"][:n])][:, 0].numpy()
    after = pairs["image"][:n, 0]
    lo, hi = np.percentile(before, [1, 99])

    def grey(images: np.ndarray) -> np.ndarray:
        values = ((np.clip(images, lo, hi) - lo) / (hi - lo + 1e-6) * 255).astype(np.uint8)
        return np.repeat(np.concatenate(list(values), 1)[..., None], 3, 2)

    colours = labels.colourise(pairs["seg"][:n]).astype(np.float32)
    region = pairs["region"][:n, 0] > 0
    colours[region & (pairs["seg"][:n] == 0)] = 80.0  # the painted ring around the tumour, grey
    shaded = np.concatenate(list(colours.astype(np.uint8)), 1)
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate([grey(before), shaded, grey(after)])).save(tmp, format="PNG")
