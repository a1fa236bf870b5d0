"""The BraTS slice cache: the stage that extracts axial slices once; `synthmed.data.brats.slices` loads it.

The slice cache is an artefact made by `slice_cache` (the stage `synthmed.artifacts.brats_slice_cache`):
per subject, the extraction (read NIfTI, z-score each modality within the brain, resize slices to
`image_size`) runs once, into

    <data_dir>/brats_slices/<hash of (the subjects' files, modalities, image_size, skip_invalid, version)>/
        <subject>/image.npy (S, M, H, W) float16, seg.npy (S, H, W) uint8 (indices 0..3, labels.py),
                  brain.npy (S, H, W) uint8, slice.npy (S,) int16 (axial index), tumour.npy (S,) bool,
                  done.json (written last)
        artifact.yaml (written last: the config, the root, the cached subjects, the label convention)

Cached slices: every slice with tumour, plus non-tumour brain slices (evenly spaced, as many as there are
tumour slices) so that `empty_fraction` (up to 0.5) can be served. A slice's tumour flag is read from its
resized mask, so a "tumour slice" always shows tumour at `image_size` (a few voxels of tumour can vanish
when 240 px become 64). A second run with the same settings opens no NIfTI.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.cleanup import remove_stale_temp_files
from synthmed.data.brats import labels
from synthmed.data.brats.discovery import (
    MODALITIES,
    BratsSubject,
    check_subject,
    discover_subjects,
    read_volume,
    summarize,
    to_brats_labels,
)
from synthmed.utils import atomic_path, atomic_write_json, config_hash

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # 3: one artefact folder per set of subjects (2: tumour.npy from the resized mask)


def check_modalities(modalities: Sequence[str]) -> list[str]:
    """`modalities` as a list; ValueError naming `data.modalities` when they are unknown or repeated."""
    modalities = list(modalities)
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"data.modalities={modalities}: choose distinct names from {list(MODALITIES)}")
    return modalities


def _resize(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize (N, C, H, W) to (N, C, size, size); "bilinear" (antialiased) for images, "nearest" for masks."""
    if x.shape[-2:] == (size, size):
        return np.asarray(x, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if mode == "nearest":
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="nearest-exact")
    else:
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t.numpy()


def preprocess_volumes(subject: BratsSubject, modalities: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one subject: (M, X, Y, Z) float32 z-scored within the brain (0 outside), the brain mask
    (any of the four modalities > 0) and the segmentation mapped to 0..3.

    Raises FileNotFoundError/ValueError naming the file for a missing or corrupt file, unequal shapes or
    unknown label values."""
    check_subject(subject, load_labels=False)
    volumes = {m: read_volume(subject.files[m]) for m in MODALITIES}
    seg_path = subject.files["seg"]
    seg = to_brats_labels(read_volume(seg_path), subject, seg_path)
    for kind, vol in (*volumes.items(), ("seg", seg)):
        if vol.shape != seg.shape:
            raise ValueError(f"shape mismatch in subject {subject.id}: {subject.files[kind]} is {vol.shape}, "
                             f"{seg_path.name} is {seg.shape}")
    brain = np.zeros(seg.shape, bool)
    for vol in volumes.values():
        brain |= vol > 0
    images = np.zeros((len(modalities), *seg.shape), np.float32)
    if brain.any():
        for i, m in enumerate(modalities):
            values = volumes[m][brain].astype(np.float64)
            mean, std = values.mean(), values.std()
            images[i][brain] = ((values - mean) / (std if std > 1e-6 else 1.0)).astype(np.float32)
    return images, brain, labels.to_index(seg)


def extract_subject(subject: BratsSubject, modalities: Sequence[str], image_size: int) -> dict[str, np.ndarray]:
    """The slices kept for the cache: every tumour slice and as many evenly spaced tumour-free brain slices."""
    images, brain, seg = preprocess_volumes(subject, modalities)
    tumour_z = np.flatnonzero((seg > 0).any(axis=(0, 1)))
    empty_pool = np.flatnonzero(brain.any(axis=(0, 1)) & ~(seg > 0).any(axis=(0, 1)))
    n_empty = min(len(empty_pool), len(tumour_z))
    if n_empty:
        empty_pool = empty_pool[np.linspace(0, len(empty_pool) - 1, n_empty).round().astype(int)]
    else:
        empty_pool = empty_pool[:0]
    keep = np.sort(np.concatenate([tumour_z, empty_pool])).astype(int)
    image = _resize(np.moveaxis(images[..., keep], -1, 0), image_size, "bilinear").astype(np.float16)
    seg_s = _resize(np.moveaxis(seg[..., keep], -1, 0)[:, None], image_size, "nearest")[:, 0].astype(np.uint8)
    brain_s = _resize(np.moveaxis(brain[..., keep], -1, 0)[:, None], image_size, "nearest")[:, 0].astype(np.uint8)
    # the flag describes the mask the model is trained on, not the full-resolution one
    return {"image": image, "seg": seg_s, "brain": brain_s, "slice": keep.astype(np.int16),
            "tumour": (seg_s > 0).any(axis=(1, 2))}


def _skip_or_raise(problems: list[tuple[BratsSubject, Exception]], skip_invalid: bool, key: str) -> None:
    if not problems:
        return
    if not skip_invalid:
        raise problems[0][1]
    message = (f"{key}=true: skipped {len(problems)} invalid subject(s):\n  "
               + "\n  ".join(f"{s.id}: {e}" for s, e in problems))
    warnings.warn(message, UserWarning, stacklevel=3)
    log.warning(message)


def slice_cache(root: str | Path, data_dir: str | Path, modalities: Sequence[str], image_size: int,
                skip_invalid: bool, progress: bool = True) -> Path:
    """The slice cache of the BraTS folder `root` (the stage `brats_slice_cache`): found by the hash of the
    subjects' files (names, sizes, times), `modalities`, `image_size` and `skip_invalid`, else extracted
    (resumable, under a lock). Invalid subjects raise an error naming the file, or are left out with a
    warning when `skip_invalid`; the artefact's metadata lists the subjects it holds."""
    from synthmed import artifacts

    if root is None:
        raise ValueError("data.cache needs data.root: the BraTS folder (or the brats_phantom stage) to cache slices of")
    modalities = check_modalities(modalities)
    found = discover_subjects(root)
    config = {"subjects": config_hash([[s.id, s.signature()] for s in found], length=16),
              "modalities": modalities, "image_size": int(image_size), "skip_invalid": bool(skip_invalid),
              "version": CACHE_VERSION}
    path = Path(data_dir) / "brats_slices" / config_hash(config)
    extra: dict[str, Any] = {"root": str(Path(root).expanduser().resolve()), "labels": labels.convention()}

    def make(out: Path) -> None:
        # filled in here, written by ensure() after make: which subjects the cache holds
        extra.update(_extract_all(found, out, modalities, int(image_size), bool(skip_invalid), progress))

    return artifacts.ensure(path, "brats_slices", config, make, extra)


def _extract_all(found: list[BratsSubject], out: Path, modalities: list[str], image_size: int,
                 skip_invalid: bool, progress: bool) -> dict[str, Any]:
    """Cache the slices of every usable subject not cached yet (one folder each, `done.json` written last)."""
    from tqdm.auto import tqdm

    # ensure() holds the cache's lock: temporary files here are a killed run's (e.g. `.image.npy.*.tmp.npy`)
    remove_stale_temp_files(out)
    problems: list[tuple[BratsSubject, Exception]] = []
    present = []
    for s in found:  # presence is checked without opening files; the rest while extracting
        if s.missing:
            try:
                check_subject(s, load_labels=False)
            except (FileNotFoundError, ValueError) as err:
                problems.append((s, err))
                continue
        present.append(s)
    todo = [s for s in present if not (out / s.id / "done.json").exists()]
    for s in tqdm(todo, desc="extracting BraTS slices", unit="subject", disable=not progress or not todo):
        try:
            arrays = extract_subject(s, modalities, image_size)
        except (FileNotFoundError, ValueError) as err:
            problems.append((s, err))
            continue
        folder = out / s.id
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            with atomic_path(folder / f"{name}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, array)
        atomic_write_json(folder / "done.json", {"subject": s.id, "source": s.source, "grade": s.grade,
                                                 "slices": int(len(arrays["slice"]))})
    _skip_or_raise(problems, skip_invalid, "data.cache.skip_invalid")
    cached = [s for s in present if (out / s.id / "done.json").exists()]
    if not cached:
        raise ValueError(f"data.root: no valid BraTS subject to cache among {len(found)} found")
    return {"subjects": [s.id for s in cached], "skipped": {s.id: str(e) for s, e in problems},
            "summary": summarize(cached)}
