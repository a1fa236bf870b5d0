"""`aug=gan`: synthetic (label map, MRI slice) pairs from the tumour generator and the brain generator.

1. Train the DCGAN (tumour label maps) and pix2pix (label map + brain mask -> modalities) on the real
   training split, or load them (`aug.generators`). Trained generators are cached under `cache_dir`,
   keyed by the hash of what produced them (their configs, epochs, seed and the training slices).
2. Sample label maps, resize them to slice size, put each inside the brain mask of a real training
   slice, drop degenerate ones (rule: `min_tumour_pixels`, `max_tumour_fraction`), translate with pix2pix.
3. Cache the pairs on disk (same key + the sampling knobs) and return them as extra training items.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from synthmed.augment.base import Augmenter
from synthmed.utils import atomic_path, config_hash, file_lock, to_plain

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # part of the cache key; 2: generators seeded before their weights are initialised;
#                    3: DCGAN discriminator split into features + head (minibatch-std option)


def _training_slices(dataset: Dataset) -> dict[str, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in ("image", "seg", "brain")}


def _digest(arrays: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(arrays[key].contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


@contextlib.contextmanager
def _global_rng_untouched() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global RNG states (and Lightning's seed variables) on exit.

    Training the generators reseeds and draws from the global RNGs; a later run that reads the cache does
    not. Without this, the U-Net after `aug=gan` would train on a different random stream depending on
    whether the cache existed, and the same config + seed would not give the same numbers.
    """
    states = random.getstate(), np.random.get_state()
    env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            for key, value in env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class GanAugmenter(Augmenter):
    """Adds `extra` synthetic pairs made by a trained tumour generator and brain generator."""

    name = "gan"

    def __init__(
        self,
        extra: int,
        dcgan: Mapping,
        pix2pix: Mapping,
        dcgan_epochs: int,
        pix2pix_epochs: int,
        batch_size: int = 16,
        cache_dir: str = "data/gan",
        generators: Mapping | None = None,
        min_tumour_pixels: int = 20,
        max_tumour_fraction: float = 0.5,
        max_components: int | None = None,
        max_tries: int = 20,
        name: str | None = None,
        replace_real: bool = False,
    ) -> None:
        super().__init__(extra, name, replace_real)
        self.dcgan_cfg, self.pix2pix_cfg = to_plain(dcgan), to_plain(pix2pix)
        self.epochs = {"dcgan": int(dcgan_epochs), "pix2pix": int(pix2pix_epochs)}
        self.batch_size, self.cache_dir = int(batch_size), Path(cache_dir)
        self.generators = to_plain(generators) if generators else None
        self.min_tumour_pixels, self.max_tumour_fraction = int(min_tumour_pixels), float(max_tumour_fraction)
        self.max_components = None if max_components is None else int(max_components)
        self.max_tries = int(max_tries)
        self.counts: dict[str, int] = {}

    # --- generators -----------------------------------------------------------------------------
    def _train(self, kind: str, data: dict[str, torch.Tensor], seed: int, path: Path) -> Any:
        import lightning as L
        from hydra.utils import instantiate

        # seeded before the weights are initialised: a generator depends on its cache key alone, never on
        # what the caller drew from the global RNG before (e.g. the width of the U-Net it augments for)
        L.seed_everything(seed, workers=True, verbose=False)
        module = instantiate(self.dcgan_cfg if kind == "dcgan" else self.pix2pix_cfg)
        if path.exists():
            module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            log.info("aug=%s: reusing the cached %s generator %s", self.name, kind, path)
            return module
        if self.generators and self.generators.get(kind):
            given = Path(self.generators[kind])
            if not given.is_file():
                raise FileNotFoundError(f"aug.generators.{kind}={given} does not exist")
            state = torch.load(given, map_location="cpu", weights_only=True)
            module.load_state_dict(state.get("state_dict", state))
            return module
        items = [{k: v[i] for k, v in data.items()} for i in range(len(data["seg"]))]
        if kind == "dcgan":  # the tumour generator learns from slices that show tumour
            items = [item for item in items if item["seg"].any()]
        loader = DataLoader(items, batch_size=self.batch_size, shuffle=True, drop_last=len(items) > self.batch_size)
        trainer = L.Trainer(max_epochs=self.epochs[kind], accelerator="cpu", logger=False, deterministic=True,
                            enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=True,
                            default_root_dir=str(path.parent), num_sanity_val_steps=0, limit_val_batches=0)
        log.info("aug=%s: training the %s generator on %d real slices (%d epochs)", self.name, kind, len(items),
                 self.epochs[kind])
        trainer.fit(module, loader)
        with atomic_path(path) as tmp:
            torch.save(module.state_dict(), tmp)
        return module

    # --- pairs ----------------------------------------------------------------------------------
    def _sample_pairs(self, tumour_gan, translator, data, seed: int) -> dict[str, np.ndarray]:
        size = data["seg"].shape[-1]
        brains = data["brain"]  # (N, 1, H, W)
        generator = torch.Generator().manual_seed(seed)
        kept_seg, kept_brain, dropped = [], [], 0
        for _ in range(self.max_tries):
            need = self.extra - sum(len(s) for s in kept_seg)
            if need <= 0:
                break
            maps = tumour_gan.sample(2 * need, generator=generator)[:, None].float()
            maps = F.interpolate(maps, size=(size, size), mode="nearest-exact")[:, 0].long()
            pick = torch.randint(len(brains), (len(maps),), generator=generator)
            brain = brains[pick]
            maps = maps * (brain[:, 0] > 0)  # a tumour lives inside the brain
            tumour = (maps > 0).flatten(1).sum(1)
            area = (brain > 0).flatten(1).sum(1).clamp(min=1)
            ok = (tumour >= self.min_tumour_pixels) & (tumour <= self.max_tumour_fraction * area)
            if self.max_components is not None:  # speckle from an unconverged generator is not a tumour
                ok &= torch.as_tensor([tumour_pieces(m) <= self.max_components for m in maps.numpy()])
            dropped += int((~ok).sum())
            kept_seg.append(maps[ok][:need])
            kept_brain.append(brain[ok][:need])
        seg, brain = torch.cat(kept_seg), torch.cat(kept_brain)
        if len(seg) < self.extra:
            raise RuntimeError(f"aug={self.name}: only {len(seg)} of aug.extra={self.extra} sampled label maps "
                               f"passed the degeneracy rule after {self.max_tries} tries; train the tumour generator "
                               f"longer (see its sample grids under {self.cache_dir}) or relax aug.min_tumour_pixels / "
                               f"aug.max_tumour_fraction / aug.max_components")
        with torch.no_grad():
            images = torch.cat([translator.translate(s, b) for s, b in zip(seg.split(64), brain.split(64), strict=True)])
        images = images * brain  # background stays background, as in the real z-scored slices
        self.counts = {"kept": len(seg), "dropped": dropped}
        return {"image": images.numpy().astype(np.float32), "seg": seg.numpy().astype(np.int64),
                "brain": brain.numpy().astype(np.float32)}

    def extra_samples(self, dataset: Dataset, seed: int = 0) -> list[dict[str, Any]]:
        if self.extra == 0:
            return []
        with _global_rng_untouched():
            return self._extra_samples(dataset, seed)

    def _extra_samples(self, dataset: Dataset, seed: int) -> list[dict[str, Any]]:
        data = _training_slices(dataset)
        key = config_hash({"dcgan": self.dcgan_cfg, "pix2pix": self.pix2pix_cfg, "epochs": self.epochs,
                           "batch_size": self.batch_size, "seed": seed, "data": _digest(data),
                           "generators": self.generators, "version": CACHE_VERSION})
        folder = self.cache_dir / key
        folder.mkdir(parents=True, exist_ok=True)
        rule = {"extra": self.extra, "min": self.min_tumour_pixels, "max": self.max_tumour_fraction,
                "tries": self.max_tries}
        if self.max_components is not None:
            rule["components"] = self.max_components
        pairs_key = config_hash(rule)
        pairs_path = folder / f"pairs_{pairs_key}.npz"
        with file_lock(folder / ".lock"):  # parallel jobs sharing generators train them once
            if pairs_path.exists():
                log.info("aug=%s: reusing %s", self.name, pairs_path)
                pairs = dict(np.load(pairs_path))
            else:
                tumour_gan = self._train("dcgan", data, seed, folder / "dcgan.pt")
                translator = self._train("pix2pix", data, seed, folder / "pix2pix.pt")
                pairs = self._sample_pairs(tumour_gan, translator, data, seed)
                with atomic_path(pairs_path) as tmp, open(tmp, "wb") as f:
                    np.savez(f, **pairs)
                _save_grid(folder / f"pairs_{pairs_key}.png", pairs)
        log.info("aug=%s: %d synthetic pairs from %s", self.name, len(pairs["seg"]), folder)
        return [{"image": torch.from_numpy(pairs["image"][i]), "seg": torch.from_numpy(pairs["seg"][i]),
                 "brain": torch.from_numpy(pairs["brain"][i]), "subject": "synthetic", "slice": -1}
                for i in range(len(pairs["seg"]))]


def tumour_pieces(label_map: np.ndarray) -> int:
    """Connected pieces (8-connectivity) of the tumour in one label map."""
    from scipy import ndimage as ndi

    return int(ndi.label(label_map > 0, structure=np.ones((3, 3), bool))[1])


def _save_grid(path: Path, pairs: dict[str, np.ndarray], n: int = 8) -> None:
    """Label maps above, their first synthetic modality below: a look at what was added."""
    from PIL import Image

    from synthmed.models.dcgan import colourise_labels

    n = min(n, len(pairs["seg"]))
    labels = colourise_labels(pairs["seg"][:n])
    image = pairs["image"][:n, 0]
    lo, hi = np.percentile(image, [1, 99])
    grey = ((np.clip(image, lo, hi) - lo) / (hi - lo + 1e-6) * 255).astype(np.uint8)
    grid = np.concatenate([np.concatenate(list(labels), 1), np.repeat(np.concatenate(list(grey), 1)[..., None], 3, 2)])
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


class CombinedAugmenter(Augmenter):
    """Several regimes at once (e.g. `aug=gan_transform`): the extra samples of each, concatenated."""

    name = "combined"

    def __init__(self, parts: Mapping[str, Any], name: str | None = None, replace_real: bool = False) -> None:
        from hydra.utils import instantiate

        self.parts = {key: part if isinstance(part, Augmenter) else instantiate(part) for key, part in parts.items()}
        inner = [key for key, part in self.parts.items() if getattr(part, "replace_real", False)]
        if inner:  # the datamodule reads the flag of the regime it was given, never of its parts
            raise ValueError(f"aug.parts.{inner[0]}.replace_real=true: set aug.replace_real on the combined regime")
        super().__init__(sum(p.extra for p in self.parts.values()), name, replace_real)

    def extra_samples(self, dataset: Dataset, seed: int = 0) -> list[dict[str, Any]]:
        return [item for part in self.parts.values() for item in part.extra_samples(dataset, seed)]
