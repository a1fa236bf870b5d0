"""`aug=gan`: synthetic (label map, MRI slice) pairs from the tumour generator and the brain generator.

The pairs are an artefact made by the stage `brats_gan_pairs` (`gan_pairs` here), before the data module exists:

1. The real training split of the job's data config (its `aug` left out): the very slices the U-Net trains on.
2. The generators, each an artefact of its own under `<data_dir>/gan/generators/<kind>/<hash>/<kind>.pt`, keyed
   by its own config, epochs, batch size, split seed, the digest of the training slices and `VERSION` (so
   `aug=gan` and `aug=gan_inpaint` of one seed share one DCGAN): the experiments' LightningModules
   (`TumourLabelGAN`, `BrainSliceTranslator`) trained by the job's configured trainer (`trainer=gpu` trains
   them on the GPU) with the run's loggers under the metric prefixes `gan/<kind>`; or loaded from
   `aug.generators`.
3. Sample label maps, resize them to slice size, put each inside the brain mask of a real training slice, drop
   degenerate ones (`min_tumour_pixels`, `max_tumour_fraction`, `max_components`), translate with pix2pix (given
   that slice's tissue classes too with `anatomy=tissue`); `<data_dir>/gan/pairs/<hash>/pairs.npz` + `pairs.png`.

`GanAugmenter` only loads the pairs file it is given (`aug.pairs`); the inpainting route (`aug=gan_inpaint`,
`synthmed.augment.inpaint`) reuses the generator artefacts, the rule and the augmenter."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, Dataset

from synthmed.augment.base import Augmenter
from synthmed.data.brats import labels
from synthmed.tracking import PrefixedLogger
from synthmed.utils import atomic_path, config_hash, to_plain

log = logging.getLogger(__name__)

VERSION = 5  # part of the generators' key; 2: seeded before their weights are initialised; 3: DCGAN
#              discriminator split into features + head; 4: trained by the configured trainer, artefact folders;
#              5: one artefact per generator (gan/generators/<kind>/<hash>/), keyed by its own config
PAIRS_FILE = "pairs.npz"
TUMOUR_ONLY = frozenset({"dcgan", "inpaint"})  # generators that learn from the training slices showing tumour


def _training_slices(dataset: Dataset) -> dict[str, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in ("image", "seg", "brain")}


def _digest(arrays: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(arrays[key].contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


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


def generator_trainer_config(trainer: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """The trainer config a generator trains with: the job's `trainer` (accelerator, devices, precision,
    determinism) with `max_epochs=epochs`, no checkpoints, no validation (a GAN has no loss to select on) and
    its losses logged at every step. The U-Net's step budget (`max_steps`, protocol=equal_steps) is not the
    generator's: it trains its own epochs."""
    cfg = to_plain(trainer)
    # every step's losses reach the run's loggers: a generator's epoch can be fewer steps than the default 50
    cfg.update(max_epochs=int(epochs), max_steps=-1, enable_checkpointing=False, enable_model_summary=False,
               num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=1)
    return cfg


def generator_epochs(epochs: Mapping[str, int], slices: int, epochs_at: int | None) -> dict[str, int]:
    """Each generator's epochs on a real training split of `slices` slices. The stated `epochs` are counted at
    `epochs_at` slices (protocol=equal_steps: the scale's default split): a smaller split trains
    ceil(epochs x epochs_at / slices) epochs, about the optimiser steps it takes at `epochs_at`, as the U-Net
    does under equal steps (with the stated epochs, 50 real slices would give the DCGAN a sixth of its steps,
    too few to converge). A split of `epochs_at` slices or more, or `epochs_at=None` (protocol=equal_epochs),
    trains the stated epochs."""
    if epochs_at is None or slices >= int(epochs_at):
        return {kind: int(n) for kind, n in epochs.items()}
    if int(epochs_at) <= 0 or slices <= 0:
        raise ValueError(f"aug.pairs.epochs_at={epochs_at} and the split's {slices} real slices must be positive")
    return {kind: math.ceil(int(n) * int(epochs_at) / slices) for kind, n in epochs.items()}


def real_training_split(data: Mapping[str, Any]) -> Dataset:
    """The real training slices of the job's data config: its data module built without `aug` (which would
    read the pairs being made), set up with the same split seed: the very slices the U-Net trains on."""
    from hydra.utils import instantiate

    loading = {key: to_plain(data[key]) for key in data if key != "aug"}  # `aug` is never read: no cycle
    datamodule = instantiate({**loading, "aug": None})
    datamodule.setup("fit")
    return datamodule


def _train_generator(kind: str, config: Mapping[str, Any], items: list[dict], trainer: Mapping[str, Any],
                     epochs: int, batch_size: int, seed: int, folder: Path, loggers: list[Logger]) -> Any:
    import lightning as L
    from hydra.utils import instantiate

    # seeded before the weights are initialised: a generator depends on its key alone, never on what the
    # caller drew from the global RNG before (e.g. the width of the U-Net it augments for)
    L.seed_everything(seed, workers=True, verbose=False)
    module = instantiate(config)
    if kind in TUMOUR_ONLY:  # the tumour generator and the inpainter learn from slices that show tumour
        items = [item for item in items if item["seg"].any()]
    if not items:
        raise ValueError(f"aug=gan: the {kind} generator learns from real training slices with tumour, and the "
                         "split holds none (data.num_train_slices, data.empty_fraction)")
    loader = DataLoader(items, batch_size=batch_size, shuffle=True, drop_last=len(items) > batch_size)
    fit = instantiate(generator_trainer_config(trainer, epochs), default_root_dir=str(folder),
                      logger=[PrefixedLogger(logger, f"gan/{kind}") for logger in loggers] or False)
    log.info("aug=gan: training the %s generator (%s) on %d real slices (%d epochs, accelerator %s)", kind,
             type(module).__name__, len(items), epochs, fit.accelerator.__class__.__name__)
    fit.fit(module, loader)
    with atomic_path(folder / f"{kind}.pt") as tmp:
        torch.save(module.cpu().state_dict(), tmp)
    return module


def generator_key(kind: str, config: Mapping[str, Any], epochs: int, batch_size: int, seed: int,
                  data: str) -> dict[str, Any]:
    """What one trained generator depends on, and nothing else: its own config, epochs and batch size, the split
    seed, the digest of the training slices and `VERSION`. Two regimes that train the same generator on the same
    split (aug=gan, aug=gan_inpaint: one DCGAN) find one artefact."""
    return {"kind": kind, "config": to_plain(config), "epochs": int(epochs), "batch_size": int(batch_size),
            "seed": int(seed), "data": data, "version": VERSION}


def generator_folder(data_dir: str | Path, key: Mapping[str, Any]) -> Path:
    """`<data_dir>/gan/generators/<kind>/<hash of its key>/`, holding `<kind>.pt`, its sample grids and metadata."""
    return Path(data_dir) / "gan" / "generators" / str(key["kind"]) / config_hash(key)


def given_generators(generators: Mapping[str, Any] | None, kinds: list[str]) -> dict[str, Path]:
    """`aug.generators` as {kind: existing file}; an unknown kind or a missing file is an error naming the key."""
    given = {}
    for kind, value in (to_plain(generators) or {}).items():
        if kind not in kinds:
            raise ValueError(f"aug.generators.{kind}: the generators of this regime are {sorted(kinds)}")
        if value:
            given[kind] = Path(value)
            if not given[kind].is_file():
                raise FileNotFoundError(f"aug.generators.{kind}={value} does not exist")
    return given


def generator_keys(configs: dict[str, dict], epochs: dict[str, int], batch_size: int, seed: int, data: str,
                   given: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Per generator, what the pairs drawn from it depend on: its artefact key, or (given) its config + file digest."""
    return {kind: {"config": configs[kind], "file": _file_digest(given[kind])} if kind in given
            else generator_key(kind, configs[kind], epochs[kind], batch_size, seed, data) for kind in configs}


def load_generators(slices: dict[str, torch.Tensor], seed: int, configs: dict[str, dict], keys: dict[str, dict],
                    batch_size: int, trainer: Mapping[str, Any], given: dict[str, Path], data_dir: Path,
                    loggers: list[Logger]) -> dict[str, Any]:
    """The generators of `configs` ({kind: config}): each loaded from `given` (aug.generators) or from its own
    artefact (`generator_folder`), trained first if missing (under that artefact's lock)."""
    from hydra.utils import instantiate

    from synthmed import artifacts

    items = [{k: v[i] for k, v in slices.items()} for i in range(len(slices["seg"]))]
    modules = {}
    for kind, config in configs.items():
        if kind in given:
            path = given[kind]
        else:
            key = keys[kind]
            make = functools.partial(_train_generator, kind, configs[kind], items, trainer, key["epochs"], batch_size,
                                     seed, loggers=loggers)  # make(folder) trains into the artefact's folder
            folder = artifacts.ensure(generator_folder(data_dir, key), f"brats_{kind}_generator", key, make,
                                      {"kind": kind, "labels": labels.convention(), "slices": len(items)})
            path = folder / f"{kind}.pt"
        module = instantiate(config)
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state.get("state_dict", state))
        modules[kind] = module
    return modules


def gan_pairs(data: Mapping[str, Any], dcgan: Mapping[str, Any], pix2pix: Mapping[str, Any], dcgan_epochs: int,
              pix2pix_epochs: int, batch_size: int, trainer: Mapping[str, Any], generators: Mapping[str, Any] | None,
              extra: int, min_tumour_pixels: int, max_tumour_fraction: float, max_components: int | None,
              max_tries: int, data_dir: str | Path, loggers: list[Logger] | None = None,
              epochs_at: int | None = None, map_upsample: str = "bilinear", *, translate_norm: str) -> Path:
    """The pairs file of `aug=gan` (the stage `brats_gan_pairs`): `extra` synthetic pairs sampled from the
    generators trained on the real training split of `data` (or loaded from `generators`; their epochs as
    `generator_epochs` gives them), found by the hash of what produced them or made first (under locks). The
    global RNGs are left as they were."""
    import time

    since = time.time()
    rule = sampling_rule(extra, min_tumour_pixels, max_tumour_fraction, max_components, max_tries, map_upsample)
    if translate_norm not in TRANSLATE_NORMS:  # both checked before the data are loaded
        raise ValueError(f"aug.pairs.translate_norm={translate_norm!r} must be one of {list(TRANSLATE_NORMS)}")
    with _global_rng_untouched():
        datamodule = real_training_split(data)
        slices = _training_slices(datamodule.real_train)
        seed = datamodule.split_seed
        configs = {"dcgan": to_plain(dcgan), "pix2pix": to_plain(pix2pix)}
        epochs = generator_epochs({"dcgan": dcgan_epochs, "pix2pix": pix2pix_epochs}, len(slices["seg"]), epochs_at)
        given = given_generators(generators, list(configs))
        keys = generator_keys(configs, epochs, int(batch_size), seed, _digest(slices), given)
        config = {"generators": keys, "rule": rule}
        if translate_norm != "running":  # (running: the key, and so the cached pairs, of the runs before this knob)
            config["translate_norm"] = translate_norm
        extra_meta: dict[str, Any] = {"labels": labels.convention()}

        def make(out: Path) -> None:
            if rule["extra"] == 0:  # nothing to draw: no generator is trained
                pairs = empty_pairs(slices)
                counts = {"kept": 0, "dropped": 0}
            else:
                modules = load_generators(slices, seed, configs, keys, int(batch_size), trainer, given,
                                          Path(data_dir), list(loggers or []))
                pairs, counts = _sample_pairs(modules["dcgan"], modules["pix2pix"], slices, seed, rule, out,
                                              batch_stats=translate_norm == "batch")
            with atomic_path(out / PAIRS_FILE) as tmp, open(tmp, "wb") as f:
                np.savez(f, **pairs)
            if len(pairs["seg"]):
                _save_grid(out / "pairs.png", pairs)
            extra_meta.update(counts=counts, generators={k: str(v) for k, v in given.items()})

        from synthmed import artifacts

        folder = artifacts.ensure(Path(data_dir) / "gan" / "pairs" / config_hash(config), "brats_gan_pairs", config,
                                  make, extra_meta)
    tell_the_run(list(loggers or []), folder, trained_folders(data_dir, keys, given), since)
    return folder / PAIRS_FILE


MAP_UPSAMPLING = ("bilinear", "nearest")
TRANSLATE_NORMS = ("batch", "running")  # the brain generator's batch norm at synthesis (models.pix2pix.batch_statistics)


def sampling_rule(extra: int, min_tumour_pixels: int, max_tumour_fraction: float, max_components: int | None,
                  max_tries: int, map_upsample: str = "bilinear") -> dict[str, Any]:
    """How many maps to keep, which to drop as degenerate, how they reach the slices' size: part of the pairs' key."""
    if map_upsample not in MAP_UPSAMPLING:
        raise ValueError(f"aug.pairs.map_upsample={map_upsample!r} must be one of {list(MAP_UPSAMPLING)}")
    rule = {"extra": int(extra), "min_tumour_pixels": int(min_tumour_pixels),
            "max_tumour_fraction": float(max_tumour_fraction), "max_tries": int(max_tries),
            "max_components": None if max_components is None else int(max_components)}
    if map_upsample != "nearest":  # (nearest: the key, and so the cached pairs, of the runs before this knob)
        rule["map_upsample"] = map_upsample
    return rule


def empty_pairs(slices: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A pairs file of no pairs, shaped like the slices (aug.extra=0)."""
    return {"image": np.zeros((0, *slices["image"].shape[1:]), np.float32),
            "seg": np.zeros((0, *slices["seg"].shape[1:]), np.int64),
            "brain": np.zeros((0, *slices["brain"].shape[1:]), np.float32)}


def trained_folders(data_dir: str | Path, keys: dict[str, dict], given: dict[str, Path]) -> dict[str, Path]:
    """The artefact folders of the generators that were not given (trained by this run or found)."""
    return {kind: generator_folder(data_dir, key) for kind, key in keys.items() if kind not in given}


def tell_the_run(loggers: list[Logger], pairs: Path, generators: dict[str, Path], since: float) -> None:
    """Declare in the run's W&B the pair set (`aug.pairs`) and each generator it used, made by it or found
    (`aug.pairs.generators.<kind>`), and show it the pairs picture (`aug/pairs`)."""
    from synthmed import artifacts, tracking

    used = {"aug.pairs": str(pairs)}
    for kind, folder in generators.items():
        if artifacts.is_complete(folder):  # aug.extra=0 trains none
            used[f"aug.pairs.generators.{kind}"] = str(folder)
    tracking.declare_artifacts(loggers, used, since)
    if (pairs / "pairs.png").is_file():
        for logger in loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.log_image(key="aug/pairs", images=[str(pairs / "pairs.png")])


def passes_rule(maps: torch.Tensor, brain: torch.Tensor, rule: dict[str, Any]) -> torch.Tensor:
    """(B,) bool: which label maps (B, H, W), inside their brains (B, 1, H, W), are not degenerate."""
    tumour = (maps > 0).flatten(1).sum(1)
    area = (brain > 0).flatten(1).sum(1).clamp(min=1)
    ok = (tumour >= rule["min_tumour_pixels"]) & (tumour <= rule["max_tumour_fraction"] * area)
    if rule["max_components"] is not None:  # speckle from an unconverged generator is not a tumour
        ok &= torch.as_tensor([tumour_pieces(m) <= rule["max_components"] for m in maps.numpy()], dtype=torch.bool)
    return ok


def too_few_maps(regime: str, kept: int, rule: dict[str, Any], folder: Path) -> RuntimeError:
    return RuntimeError(f"aug={regime}: only {kept} of aug.extra={rule['extra']} sampled label maps passed the "
                        f"degeneracy rule after {rule['max_tries']} tries; train the tumour generator longer (see its "
                        f"sample grids under {folder.parent.parent}/generators/dcgan) or relax "
                        "aug.pairs.min_tumour_pixels / aug.pairs.max_tumour_fraction / aug.pairs.max_components")


def sample_label_maps(tumour_gan: Any, count: int, size: int, generator: torch.Generator,
                      upsample: str = "bilinear") -> torch.Tensor:
    """`count` label maps (count, size, size) int64 from the tumour generator at the slices' size. `bilinear`: its
    class probabilities resized, then the argmax (smooth edges); `nearest`: its labels resized (2x2 blocks at 2x)."""
    if upsample == "bilinear":
        return tumour_gan.sample(count, generator=generator, size=size)
    maps = tumour_gan.sample(count, generator=generator)[:, None].float()
    return F.interpolate(maps, size=(size, size), mode="nearest-exact")[:, 0].long()


def keep_label_maps(tumour_gan: Any, brains: torch.Tensor, pool: torch.Tensor, rule: dict[str, Any],
                    generator: torch.Generator, place: Any, route: str,
                    folder: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """`rule["extra"]` label maps that pass the degenerate-sample rule, each in the brain of a real training slice.

    Rounds of twice the maps still needed: drawn from the tumour generator (resized to the slices), each given a
    slice of `pool` (indices into `brains`, (N, 1, H, W)), put into its brain by `place(maps, brains, generator)`,
    judged by `passes_rule`; after `rule["max_tries"]` rounds short of `extra`, `too_few_maps`. Every draw comes
    from `generator`, in one order. -> (maps (extra, H, W) int64, slice indices (extra,), maps dropped)."""
    extra, size = rule["extra"], brains.shape[-1]
    kept_maps, kept_source, dropped = [], [], 0
    for attempt in range(rule["max_tries"]):
        need = extra - sum(len(m) for m in kept_maps)
        if need <= 0:
            break
        maps = sample_label_maps(tumour_gan, 2 * need, size, generator, rule.get("map_upsample", "nearest")).cpu()
        source = pool[torch.randint(len(pool), (len(maps),), generator=generator)]
        brain = brains[source]
        maps = place(maps, brain, generator)
        ok = passes_rule(maps, brain, rule)
        dropped += int((~ok).sum())
        kept_maps.append(maps[ok][:need])
        kept_source.append(source[ok][:need])
        log.info("aug=%s: try %d, %d of %d label maps kept (%d dropped so far)", route, attempt + 1,
                 sum(len(m) for m in kept_maps), extra, dropped)
    maps, source = torch.cat(kept_maps), torch.cat(kept_source)
    if len(maps) < extra:
        raise too_few_maps(route, len(maps), rule, folder)
    return maps, source, dropped


def _inside_brain(maps: torch.Tensor, brains: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """aug=gan's placement: the map where the DCGAN drew it, cut to the brain (a tumour lives inside it)."""
    return maps * (brains[:, 0] > 0)


def _sample_pairs(tumour_gan: Any, translator: Any, data: dict[str, torch.Tensor], seed: int, rule: dict[str, Any],
                  folder: Path, batch_stats: bool) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    generator = torch.Generator().manual_seed(seed)
    brains = data["brain"]  # (N, 1, H, W)
    seg, source, dropped = keep_label_maps(tumour_gan, brains, torch.arange(len(brains)), rule, generator,
                                           _inside_brain, "gan", folder)
    brain, real = brains[source], data["image"][source]  # the real slices the maps are put into
    if translator.hparams.anatomy == "tissue":  # their anatomy is kept (model.anatomy), so
        seg = torch.where(seg > 0, seg, data["seg"][source])  # is their own tumour: labelled, and drawn as tumour
    with torch.no_grad():  # the seeded generator: a brain generator that draws noise (SPADE) draws it from there
        images = torch.cat([translator.translate(s, b, generator=generator, image=x, batch_stats=batch_stats)
                            for s, b, x in zip(seg.split(64), brain.split(64), real.split(64), strict=True)])
    images = images.cpu() * brain  # background stays background, as in the real z-scored slices
    pairs = {"image": images.numpy().astype(np.float32), "seg": seg.numpy().astype(np.int64),
             "brain": brain.numpy().astype(np.float32)}
    return pairs, {"kept": len(seg), "dropped": dropped}


class GanAugmenter(Augmenter):
    """Adds the `extra` synthetic pairs of the pairs file `pairs` (made by the stage `brats_gan_pairs`, or
    `brats_inpaint_pairs` for `aug=gan_inpaint`: its extra `region` array stays in the file). `.pairs` is that
    file's path (brats_embed reads it)."""

    name = "gan"

    def __init__(self, extra: int, pairs: str | Path, name: str, replace_real: bool,
                 generators: Mapping[str, Any] | None) -> None:
        super().__init__(extra, name, replace_real)
        if not isinstance(pairs, (str, Path)):
            raise ValueError(f"aug.pairs must be the path of a pairs file, got a {type(pairs).__name__}: the runner "
                             "resolves the brats_gan_pairs stage node first (synthmed.artifacts.resolve)")
        path = Path(pairs)
        self.pairs = path / PAIRS_FILE if path.is_dir() else path
        self.generators = to_plain(generators)  # what the pairs were drawn from (read by the stage, kept for describe)

    def extra_samples(self, dataset: Dataset, seed: int = 0) -> list[dict[str, Any]]:
        if self.extra == 0:
            return []
        if not self.pairs.is_file():
            raise FileNotFoundError(f"aug.pairs={self.pairs} does not exist (made by the regime's pairs stage: "
                                    "brats_gan_pairs, brats_inpaint_pairs)")
        pairs = dict(np.load(self.pairs))
        if len(pairs["seg"]) != self.extra:
            raise ValueError(f"aug.pairs={self.pairs} holds {len(pairs['seg'])} pairs, aug.extra={self.extra}")
        log.info("aug=%s: %d synthetic pairs from %s", self.name, len(pairs["seg"]), self.pairs)
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

    n = min(n, len(pairs["seg"]))
    colours = labels.colourise(pairs["seg"][:n])
    image = pairs["image"][:n, 0]
    lo, hi = np.percentile(image, [1, 99])
    grey = ((np.clip(image, lo, hi) - lo) / (hi - lo + 1e-6) * 255).astype(np.uint8)
    grid = np.concatenate([np.concatenate(list(colours), 1), np.repeat(np.concatenate(list(grey), 1)[..., None], 3, 2)])
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


class CombinedAugmenter(Augmenter):
    """Several regimes at once (e.g. `aug=gan_transform`): the extra samples of each, concatenated."""

    name = "combined"

    def __init__(self, parts: Mapping[str, Any], name: str, replace_real: bool) -> None:
        from hydra.utils import instantiate

        self.parts = {key: part if isinstance(part, Augmenter) else instantiate(part) for key, part in parts.items()}
        inner = [key for key, part in self.parts.items() if getattr(part, "replace_real", False)]
        if inner:  # the datamodule reads the flag of the regime it was given, never of its parts
            raise ValueError(f"aug.parts.{inner[0]}.replace_real=true: set aug.replace_real on the combined regime")
        super().__init__(sum(p.extra for p in self.parts.values()), name, replace_real)

    def extra_samples(self, dataset: Dataset, seed: int = 0) -> list[dict[str, Any]]:
        return [item for part in self.parts.values() for item in part.extra_samples(dataset, seed)]
