"""Artefacts and the stages that make them.

Everything synthmed makes — a rendered colon dataset, a phantom cohort, a slice cache, a trained generator, a
set of synthetic pairs — is an *artefact*: a folder named by the hash of what makes it, holding its files and,
written last, `artifact.yaml` (which stage made it, the config it hashed, the hash, the versions, the label
convention where there is one). A folder without `artifact.yaml` is unfinished: its stage resumes it.

In a config, an artefact a job needs is a node whose `_target_` is a stage function (a *stage node*), e.g.
`data.root: {_target_: synthmed.artifacts.colon_frames, render: ${render}, ...}`. Before the runner builds
the data module it calls `resolve(cfg)`: every stage node under `data` and `aug` is replaced by the path its
stage returns — found: at once; missing: the stage runs (under a lock, so parallel jobs make it once). A value
given on the command line (`data.root=/my/frames`) replaces the stage node, and nothing is made. DataModules
only ever load what they are given.

The stage functions live with the code that makes the artefact (the renderer, the phantom, the generators);
this module is the one place that finds artefacts and runs stages.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from synthmed.cleanup import remove_stale_temp_files
from synthmed.utils import atomic_write_text, config_hash, file_lock, to_plain

log = logging.getLogger(__name__)

METADATA = "artifact.yaml"
STAGE_PREFIX = "synthmed.artifacts."


def versions() -> dict[str, str]:
    """The versions that could change what a stage makes (recorded, not hashed)."""
    import numpy
    import torch

    import synthmed

    return {"synthmed": synthmed.__version__, "python": platform.python_version(), "torch": str(torch.__version__),
            "numpy": str(numpy.__version__)}


def is_complete(path: str | Path) -> bool:
    return (Path(path) / METADATA).is_file()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a finished artefact (FileNotFoundError naming the folder when it is unfinished)."""
    from omegaconf import OmegaConf

    meta = Path(path) / METADATA
    if not meta.is_file():
        raise FileNotFoundError(f"{path} is not a finished artefact: {METADATA} is missing")
    return OmegaConf.to_container(OmegaConf.load(meta), resolve=False)


def ensure(path: str | Path, stage: str, config: Mapping[str, Any], make: Callable[[Path], Any],
           extra: Mapping[str, Any] | None = None) -> Path:
    """Return `path` once it holds a finished artefact: found -> at once; missing or unfinished -> `make(path)`
    runs under a lock (one parallel job makes it, the others wait and find it), then `artifact.yaml` is
    written last with `stage`, the hashed `config`, its hash, the versions and `extra` (e.g. the label
    convention, counts)."""
    from omegaconf import OmegaConf

    path = Path(path)
    if is_complete(path):
        log.info("%s: found %s", stage, path)
        return path
    with file_lock(path.parent / f".{path.name}.lock"):
        if not is_complete(path):  # another job may have made it while this one waited
            log.info("%s: making %s", stage, path)
            path.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(path)  # this job holds the lock: any temp file here is a killed writer's
            make(path)
            meta = {"stage": stage, "hash": config_hash(to_plain(config)), "config": to_plain(config),
                    "versions": versions(), **to_plain(dict(extra or {}))}
            atomic_write_text(path / METADATA, OmegaConf.to_yaml(OmegaConf.create(meta)))
    return path


# ---------------------------------------------------------------------------------------------- resolution
def _is_stage(node: Any) -> bool:
    from omegaconf import DictConfig

    return isinstance(node, DictConfig) and str(node.get("_target_", "")).startswith(STAGE_PREFIX)


def _call_stage(node: Any, context: Mapping[str, Any]) -> str:
    """Call the stage function of a stage node with its keys (configs stay DictConfigs: `_recursive_` off)
    and those of `context` (the root config, the run's loggers) that it accepts. Returns the artefact's path."""
    target = str(node["_target_"])
    name = target[len(STAGE_PREFIX):]
    function = getattr(importlib.import_module("synthmed.artifacts"), name, None) if "." not in name else None
    if function is None:
        raise ValueError(f"_target_: {target} is not a stage (the stages: {', '.join(STAGES)})")
    kwargs = {k: node[k] for k in node if not str(k).startswith("_")}  # containers stay DictConfig/ListConfig
    accepted = inspect.signature(function).parameters
    kwargs.update({k: v for k, v in context.items() if k in accepted})
    return str(function(**kwargs))


def resolve(cfg: Any, context: Mapping[str, Any] | None = None, keys: tuple[str, ...] = ("data", "aug")) -> list[str]:
    """Replace every stage node under `cfg.<keys>` by the path of its artefact (made first if missing), in
    config order, so a later stage node can read an earlier one's path by interpolation (the slice cache reads
    `${..root}`, the phantom cohort that the stage before it made). Returns the dotted keys it resolved."""
    from omegaconf import DictConfig, ListConfig, open_dict

    done: list[str] = []
    # a stage that reads the job's config beyond its node (the GAN pairs read the data config, which points
    # back at them through data.aug) takes `cfg`: an interpolation ${data} in its node would be a cycle
    context = {"cfg": cfg, **(context or {})}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, DictConfig):
            for key in list(node.keys()):
                child = node._get_node(key)
                if child is None or child._is_interpolation():
                    continue  # an interpolation (data.aug: ${aug}) is resolved where it points
                value = node[key]
                if _is_stage(value):
                    with open_dict(node):
                        node[key] = _call_stage(value, context)
                    done.append(f"{prefix}{key}")
                else:
                    walk(value, f"{prefix}{key}.")
        elif isinstance(node, ListConfig):
            for i in range(len(node)):
                walk(node[i], f"{prefix}{i}.")

    for key in keys:
        if cfg.get(key) is not None:
            walk(cfg[key], f"{key}.")
    return done


# ---------------------------------------------------------------------------------------------- the stages
def colon_frames(render: Mapping[str, Any], data_dir: str) -> Path:
    """The rendered colon dataset of a `render` config (stage: experiment=colon_render)."""
    import importlib.util

    from synthmed.render import dataset_name, render_dataset

    path = Path(data_dir) / "colon" / dataset_name(render)
    if (path / "dataset.yaml").is_file():  # the renderer writes its own metadata last
        return path
    if importlib.util.find_spec("bpy") is None:
        raise ModuleNotFoundError(f"rendering {path} needs Blender's Python module: pip install \"synthmed[render]\" "
                                  "(Python 3.11), or give frames you have with data.root=<dir>")
    log.info("colon_render: rendering the frames dataset into %s", path)
    return Path(render_dataset(render, path, progress=True))


def brats_phantom(phantom: Mapping[str, Any], num_subjects: int, data_dir: str) -> Path:
    """The phantom BraTS cohort of a `phantom` config, subjects 0..num_subjects-1 (stage: experiment=brats_phantom)."""
    from synthmed.data.brats.phantom import phantom_cohort

    return phantom_cohort(phantom, num_subjects, data_dir)


def brats_slice_cache(root: str, modalities: Any, image_size: int, skip_invalid: bool, data_dir: str) -> Path:
    """The slice cache of the BraTS folder `root` (real or phantom) at `image_size` for `modalities`."""
    from synthmed.data.brats.cache import slice_cache

    return slice_cache(root, data_dir, modalities, image_size, skip_invalid)


def brats_gan_pairs(dcgan: Mapping[str, Any], pix2pix: Mapping[str, Any], dcgan_epochs: int, pix2pix_epochs: int,
                    batch_size: int, trainer: Mapping[str, Any], generators: Any, extra: int, min_tumour_pixels: int,
                    max_tumour_fraction: float, max_components: int | None, max_tries: int, data_dir: str,
                    cfg: Any, loggers: list[Any] | None = None, epochs_at: int | None = None,
                    map_upsample: str = "bilinear", *, translate_norm: str) -> Path:
    """The synthetic pairs file of `aug=gan`: the generators (their own artefact) trained by the job's `trainer`
    on the real training split of the job's data config (`cfg.data`, resolved before), logging to the run's
    `loggers`, then sampled. `epochs_at`: the split size the epochs are counted at (`generator_epochs`);
    `translate_norm` (no default here: conf/aug/gan.yaml holds it): the brain generator's batch norm at synthesis."""
    from synthmed.augment.gan import gan_pairs

    return gan_pairs(cfg.data, dcgan, pix2pix, dcgan_epochs, pix2pix_epochs, batch_size, trainer, generators, extra,
                     min_tumour_pixels, max_tumour_fraction, max_components, max_tries, data_dir, loggers, epochs_at,
                     map_upsample, translate_norm=translate_norm)


def brats_inpaint_pairs(dcgan: Mapping[str, Any], inpaint: Mapping[str, Any], dcgan_epochs: int, inpaint_epochs: int,
                        batch_size: int, trainer: Mapping[str, Any], generators: Any, extra: int, source: str,
                        min_tumour_pixels: int, max_tumour_fraction: float, max_components: int | None,
                        max_tries: int, data_dir: str, cfg: Any, loggers: list[Any] | None = None,
                        epochs_at: int | None = None, *, tumours: str, map_upsample: str,
                        deform: Mapping[str, Any] | None) -> Path:
    """The pairs file of `aug=gan_inpaint`: tumour maps (`tumours`: deformed real ones, or DCGAN samples) placed into
    real training slices and painted in by the inpainter, the generators (each its own artefact; the DCGAN shared
    with `aug=gan`) trained by the job's `trainer` on the real training split of the job's data config (`cfg.data`),
    logging to the run's `loggers`. The last three have no default here: conf/aug/gan_inpaint.yaml holds it."""
    from synthmed.augment.inpaint import inpaint_pairs

    return inpaint_pairs(cfg.data, dcgan, inpaint, dcgan_epochs, inpaint_epochs, batch_size, trainer, generators,
                         extra, source, min_tumour_pixels, max_tumour_fraction, max_components, max_tries, data_dir,
                         loggers, epochs_at, tumours=tumours, map_upsample=map_upsample, deform=deform)


STAGES = ("colon_frames", "brats_phantom", "brats_slice_cache", "brats_gan_pairs", "brats_inpaint_pairs")
