"""The phantom cohort: BraTS-like subjects built from the MNI152 template that nilearn ships.

Each subject is the template anatomy (T1 and grey/white-matter maps; CSF is what is left inside the
brain) warped by a random affine (small rotation, scaling, shift, left-right flip) plus a smooth random
displacement, with one or more tumours: a necrotic core, an enhancing rim (none for non-enhancing,
LGG-like cases) and oedema that reaches further along white matter than through grey matter. The tumour
pushes the tissue around it (mass effect). Four modalities come from per-tissue contrasts, each with its
own bias field and Rician noise, written as int16 NIfTI (240x240x155 at 1 mm) in the BraTS 2021 layout:

    <data_dir>/brats_phantom/<hash>/BraTSPhantom_00000/BraTSPhantom_00000_{flair,t1,t1ce,t2,seg}.nii.gz

The folder is keyed by the hash of the generator config (without `num_subjects`: subject i depends only
on the config and i, so a larger cohort extends a smaller one). Generation is parallel, deterministic
(same config -> byte-identical files) and resumable (a subject is done when its five files exist; each
file is written atomically).

How it is fast: everything is done once in template space (tumour labels and intensities inside a box
around the tumour), the output-to-template coordinate map is built on a 4 mm grid (affine + smooth
warp + mass effect) and upsampled trilinearly, and one `grid_sample` call resamples all modalities.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from synthmed.cleanup import die_with_parent
from synthmed.data.brats import labels as brats_labels
from synthmed.data.brats.nifti import save_nifti
from synthmed.utils import (
    atomic_write_text,
    config_hash,
    spawn_context,
)

log = logging.getLogger(__name__)

PHANTOM_VERSION = 1  # bump when the generator changes what it writes: a new version gets a new folder
SUBJECT_PREFIX = "BraTSPhantom"
OUTPUT_SHAPE = (240, 240, 155)
# Output voxel -> MNI mm. The template brain's centre (0, -17, 5) sits at the volume centre and the
# 155 axial slices cover the template's z range -72..82 mm, as BraTS volumes cover the brain.
OUTPUT_AFFINE = np.array(
    [[1.0, 0, 0, -119.5], [0, 1.0, 0, -136.5], [0, 0, 1.0, -72.0], [0, 0, 0, 1.0]]
)
BRAIN_CENTRE_MM = np.array([0.0, -17.0, 5.0])
COARSE_MM = 4.0  # spacing of the grid on which the coordinate map and bias fields are built

# Tissue -> relative signal per modality (order of MODALITY_ORDER). Tumour classes: necrosis (NCR),
# non-enhancing tumour (NET, the LGG-like core), enhancing tumour (ET), oedema (ED).
MODALITY_ORDER = ("flair", "t1", "t1ce", "t2")
TISSUE_SIGNAL = {
    #        flair  t1    t1ce  t2
    "csf": (0.12, 0.25, 0.27, 1.00),
    "gm": (0.62, 0.55, 0.57, 0.58),
    "wm": (0.48, 0.78, 0.80, 0.40),
    "ncr": (0.58, 0.30, 0.34, 0.95),
    "net": (0.80, 0.45, 0.47, 0.82),
    "et": (0.78, 0.50, 1.15, 0.68),
    "ed": (0.92, 0.52, 0.55, 0.80),
}
NOTICE_TEXT = """\
The phantom brains are built from the MNI ICBM152 2009a nonlinear symmetric template (T1 and grey/white
matter probability maps) as distributed with nilearn (nilearn/datasets/data/mni_icbm152_*_09a_converted).

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute,
McGill University. Permission to use, copy, modify, and distribute this software and its documentation
for any purpose and without fee is hereby granted, provided that the above copyright notice appear in all
copies. The authors and McGill University make no representations about the suitability of this software
for any purpose. It is provided "as is" without express or implied warranty. The authors are not
responsible for any data loss, equipment damage, property loss, or injury to subjects or patients
resulting from the use or misuse of this software package.

References: V.S. Fonov, A.C. Evans, R.C. McKinstry, C.R. Almli, D.L. Collins, "Unbiased nonlinear
average age-appropriate brain templates from birth to adulthood", NeuroImage 47 (2009) S102;
V.S. Fonov et al., "Unbiased average age-appropriate atlases for pediatric studies", NeuroImage 54(1) 2011.
"""


@dataclass(frozen=True)
class PhantomConfig:
    """Knobs of the phantom cohort; their values live in conf/data/brats_slices.yaml (`data.root.phantom`).
    All but `workers` key the cohort's folder (the artefact's also by `num_subjects`)."""

    num_subjects: int
    seed: int
    # anatomy
    warp_mm: float  # amplitude (std) of the smooth random displacement
    warp_scale_mm: float  # its correlation length
    rotate_deg: float  # max rotation about each axis
    scale_range: float  # per-axis scaling in 1 +- scale_range
    shift_mm: float  # max translation per axis
    flip_prob: float  # left-right flip
    # tumour
    count: tuple[int, int]  # tumours per subject, inclusive range
    radius_mm: tuple[float, float]  # visible core radius (after mass effect)
    location: tuple[float, float, float] | None  # MNI mm; None: anywhere in white matter
    location_jitter_mm: float
    necrosis: tuple[float, float]  # necrotic core radius / core radius
    irregularity: float  # lobulation of the core outline
    oedema_mm: tuple[float, float]  # reach of the oedema beyond the core (in white matter)
    mass_effect: float  # 0: none; <1: how much tissue is pushed away (template radius shrink)
    non_enhancing_fraction: float  # share of LGG-like subjects without enhancing rim
    # image
    contrast: float  # scales the signal difference between tumour classes and normal tissue
    heterogeneity: float  # smooth intensity variation inside the tumour
    noise: float  # Rician noise sigma relative to the brightest normal tissue
    bias: float  # bias field (std of its log)
    workers: int = field(compare=False)  # parallel processes (does not change the output)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> PhantomConfig:
        """Build from a dict/DictConfig; unknown keys raise a ValueError that names them."""
        cfg = dict(cfg or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ValueError(f"unknown data.root.phantom key(s) {unknown}; known: {sorted(names)}")
        missing = sorted(names - set(cfg))
        if missing:
            raise ValueError(f"data.root.phantom is missing {missing} (conf/data/brats_slices.yaml holds them all)")
        for key in ("count", "radius_mm", "necrosis", "oedema_mm", "location"):
            if cfg.get(key) is not None:
                cfg[key] = tuple(cfg[key])
        return cls(**cfg)

    def key(self) -> dict[str, Any]:
        """What the cohort folder is keyed by."""
        out = asdict(self)
        out.pop("num_subjects")
        out.pop("workers")
        out["version"] = PHANTOM_VERSION
        out["shape"] = list(OUTPUT_SHAPE)
        return out

    def hash(self) -> str:
        return config_hash(self.key())


def subject_id(index: int) -> str:
    return f"{SUBJECT_PREFIX}_{index:05d}"


# ----------------------------------------------------------------------------------------------
# Template space (computed once per process)


@dataclass
class Template:
    affine: np.ndarray  # template voxel -> MNI mm
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray  # soft brain mask 0..1
    signal: np.ndarray  # (4, I, J, K) normal-tissue signal per modality
    centres: np.ndarray  # candidate tumour centres (voxel indices, deep white matter)
    edt: np.ndarray  # distance (mm) to the brain's outside


@lru_cache(maxsize=1)
def load_template() -> Template:
    """The MNI152 maps from nilearn (bundled files; nothing is downloaded)."""
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    t1 = np.asarray(t1_img.get_fdata(), dtype=np.float32)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    brain = np.clip((t1 - 0.03) / 0.12, 0.0, 1.0)
    brain = np.maximum(brain, np.clip(gm + wm, 0, 1))
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    total = gm + wm + csf
    scale = np.where(total > 1, 1 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
    gm, wm, csf = gm * scale, wm * scale, csf * scale
    table = np.array([TISSUE_SIGNAL[t] for t in ("csf", "gm", "wm")], dtype=np.float32)  # (3, 4)
    signal = np.einsum("tm,tijk->mijk", table, np.stack([csf, gm, wm])).astype(np.float32)
    inside = brain > 0.5
    edt = ndi.distance_transform_edt(inside).astype(np.float32)
    centres = np.argwhere((wm > 0.6) & (edt > 18))
    return Template(t1_img.affine.copy(), gm, wm, csf, brain.astype(np.float32), signal, centres, edt)


# ----------------------------------------------------------------------------------------------
# One subject


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian noise smoothed to correlation length `sigma` (voxels), rescaled to unit std."""
    field_ = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    return field_ / (field_.std() + 1e-8)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Tumour:
    centre: np.ndarray  # template voxel (= mm offset) coordinates
    radius: float  # visible core radius, mm
    template_radius: float  # core radius before mass effect, mm
    push: float  # mass-effect strength a
    enhancing: bool


def _sample_tumours(cfg: PhantomConfig, tpl: Template, rng: np.random.Generator) -> list[Tumour]:
    count = int(rng.integers(cfg.count[0], cfg.count[1] + 1))
    tumours: list[Tumour] = []
    enhancing = rng.random() >= cfg.non_enhancing_fraction
    for _ in range(count):
        radius = float(rng.uniform(*cfg.radius_mm))
        if cfg.location is not None:
            target = np.linalg.solve(tpl.affine, np.r_[np.asarray(cfg.location, float), 1.0])[:3]
            target = target + rng.normal(0, cfg.location_jitter_mm / np.sqrt(3), 3)
            centre = np.clip(target, 0, np.array(tpl.wm.shape) - 1)
        else:
            centre = tpl.centres[int(rng.integers(len(tpl.centres)))].astype(float)
            centre = centre + rng.uniform(-0.5, 0.5, 3)
        push = float(np.clip(cfg.mass_effect * rng.uniform(0.7, 1.3), 0.0, 0.85))
        # With the push map below, a template sphere of this radius appears with radius `radius`.
        template_radius = radius * (1 - push * np.exp(-1 / (2 * 1.5**2)))
        tumours.append(Tumour(centre, radius, template_radius, push, enhancing))
    return tumours


def _direction_field(rng: np.random.Generator, u: np.ndarray, lobes: int = 6) -> np.ndarray:
    """A smooth random function of direction `u` (3, ...) with values roughly in [-1, 1]."""
    out = np.zeros(u.shape[1:], np.float32)
    for _ in range(lobes):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        freq, phase = rng.uniform(1.0, 3.0), rng.uniform(0, 2 * np.pi)
        out += np.cos(freq * np.tensordot(v, u, axes=1) + phase).astype(np.float32)
    return out / np.sqrt(lobes / 2)


def _paint_tumour(
    tumour: Tumour, cfg: PhantomConfig, tpl: Template, rng: np.random.Generator,
    labels: np.ndarray, signal: np.ndarray,
) -> tuple[slice, ...]:
    """Draw one tumour into the template-space `labels` (uint8, BraTS numbering) and `signal` (4, ...)."""
    reach = tumour.template_radius * (1 + cfg.irregularity) + cfg.oedema_mm[1] * 1.6 + 6
    lo = np.maximum(np.floor(tumour.centre - reach).astype(int), 0)
    hi = np.minimum(np.ceil(tumour.centre + reach).astype(int) + 1, labels.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    grid = np.stack(np.meshgrid(*[np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi, strict=True)],
                                indexing="ij"))
    offset = grid - tumour.centre.astype(np.float32)[:, None, None, None]
    dist = np.sqrt((offset**2).sum(0)) + 1e-6
    shape = box_shape = dist.shape
    lobes = _direction_field(rng, offset / dist)
    texture = _smooth_noise(rng, box_shape, 2.5)
    rho = dist / (tumour.template_radius * (1 + cfg.irregularity * lobes)) + 0.06 * texture
    wm, csf, brain = tpl.wm[box], tpl.csf[box], tpl.brain[box]

    core = rho < 1.0
    necrotic_share = rng.uniform(*cfg.necrosis)
    necrotic = rho < necrotic_share + 0.08 * _smooth_noise(rng, shape, 2.0)
    beyond = (rho - 1.0) * tumour.template_radius  # mm outside the core outline
    oedema_reach = rng.uniform(*cfg.oedema_mm) * (0.15 + 1.1 * wm**1.5) * (1 + 0.35 * _smooth_noise(rng, shape, 3.0))
    oedema = (~core) & (beyond < oedema_reach) & (csf < 0.6) & (brain > 0.5)

    lab = np.zeros(shape, np.uint8)
    lab[oedema] = brats_labels.ED
    if tumour.enhancing:
        lab[core] = brats_labels.ET
        lab[core & necrotic] = brats_labels.NCR
    else:
        lab[core] = brats_labels.NCR  # the non-enhancing core shares NCR's label
    region = labels[box]
    np.copyto(region, lab, where=lab > 0)  # a later tumour overwrites an earlier one where they meet

    # Partial-volume fractions (a slightly blurred one-hot), then the new signal per modality.
    classes = ("ed", "et", "ncr") if tumour.enhancing else ("ed", "et", "net")
    codes = (brats_labels.ED, brats_labels.ET, brats_labels.NCR)
    het = 1 + cfg.heterogeneity * _smooth_noise(rng, shape, 3.0)
    base = signal[(slice(None), *box)]
    for cls, code in zip(classes, codes, strict=True):
        frac = ndi.gaussian_filter((lab == code).astype(np.float32), 0.8) * brain
        if not frac.any():
            continue
        target = np.asarray(TISSUE_SIGNAL[cls], np.float32)[:, None, None, None] * het
        base += cfg.contrast * frac * (target - base)
    return box


def _coordinate_map(
    cfg: PhantomConfig, tpl: Template, tumours: list[Tumour], rng: np.random.Generator
) -> np.ndarray:
    """Template voxel coordinates of the coarse output grid (every COARSE_MM voxels), shape (3, a, b, c)."""
    coarse = _coarse_shape()
    axes = [np.arange(m, dtype=np.float64) * COARSE_MM for m in coarse]
    vox = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    mm = OUTPUT_AFFINE[:3, :3] @ vox + OUTPUT_AFFINE[:3, 3:4]
    centred = mm - BRAIN_CENTRE_MM[:, None]
    linear = _rotation(rng, cfg.rotate_deg) @ np.diag(1 + rng.uniform(-cfg.scale_range, cfg.scale_range, 3))
    if rng.random() < cfg.flip_prob:
        linear = linear @ np.diag([-1.0, 1.0, 1.0])  # mirror left-right about the midsagittal plane
    shift = rng.uniform(-cfg.shift_mm, cfg.shift_mm, 3)
    warped = linear @ centred + BRAIN_CENTRE_MM[:, None] + shift[:, None]
    if cfg.warp_mm > 0:
        sigma = cfg.warp_scale_mm / COARSE_MM
        disp = np.stack([_smooth_noise(rng, coarse, sigma) for _ in range(3)]).reshape(3, -1)
        warped = warped + cfg.warp_mm * disp
    inv = np.linalg.inv(tpl.affine)
    q = inv[:3, :3] @ warped + inv[:3, 3:4]  # template voxels
    # Mass effect: a point at distance r from a tumour centre samples the template at
    # r * (1 - a * exp(-r^2 / 2 s^2)) -- monotone for a < 1, so tissue is pushed outwards.
    for t in tumours:
        off = q - t.centre[:, None]
        r2 = (off**2).sum(0)
        s = 1.5 * t.radius
        q = t.centre[:, None] + off * (1 - t.push * np.exp(-r2 / (2 * s * s)))
    return q.reshape(3, *coarse).astype(np.float32)


def _coarse_shape() -> tuple[int, ...]:
    # Exactly COARSE_MM apart, reaching at or past the last voxel, so a crop upsamples onto whole voxels.
    return tuple(int(np.ceil((n - 1) / COARSE_MM)) + 1 for n in OUTPUT_SHAPE)


def _brain_box(q: np.ndarray, tpl: Template) -> tuple[slice, ...]:
    """Coarse-grid index ranges that hold every point mapping into the template brain (plus one cell)."""
    inside = ndi.map_coordinates(tpl.brain, q.reshape(3, -1), order=1, mode="constant", cval=0.0) > 0.01
    idx = np.argwhere(inside.reshape(q.shape[1:]))
    lo = np.maximum(idx.min(0) - 1, 0)
    hi = np.minimum(idx.max(0) + 2, q.shape[1:])
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def make_subject(cfg: PhantomConfig, index: int) -> dict[str, np.ndarray]:
    """Volumes of subject `index`: {"flair","t1","t1ce","t2": int16, "seg": uint8}, each 240x240x155."""
    import torch
    import torch.nn.functional as F

    tpl = load_template()
    rng = np.random.default_rng([cfg.seed, index, PHANTOM_VERSION])
    tumours = _sample_tumours(cfg, tpl, rng)
    labels = np.zeros(tpl.wm.shape, np.uint8)
    signal = tpl.signal.copy()
    boxes = [_paint_tumour(t, cfg, tpl, rng, labels, signal) for t in tumours]

    q = _coordinate_map(cfg, tpl, tumours, rng)
    coarse = q.shape[1:]
    bias = np.stack([_smooth_noise(rng, coarse, 60.0 / COARSE_MM) for _ in MODALITY_ORDER]) * cfg.bias

    # Only the part of the output that sees brain is resampled; the rest stays 0 as in BraTS.
    cbox = _brain_box(q, tpl)
    small = torch.from_numpy(np.concatenate([q, bias.astype(np.float32)])[(slice(None), *cbox)])[None]
    size = tuple(int(COARSE_MM) * (s.stop - s.start - 1) + 1 for s in cbox)
    full = F.interpolate(small, size=size, mode="trilinear", align_corners=True)[0]
    out_box = tuple(
        slice(int(COARSE_MM) * s.start, min(int(COARSE_MM) * (s.stop - 1) + 1, n))
        for s, n in zip(cbox, OUTPUT_SHAPE, strict=True)
    )
    crop = tuple(slice(0, b.stop - b.start) for b in out_box)
    full = full[(slice(None), *crop)]
    coords, log_bias = full[:3], full[3:]

    # grid_sample wants (x, y, z) = (last, middle, first) axis in [-1, 1].
    scale = 2.0 / (torch.tensor(tpl.wm.shape, dtype=torch.float32) - 1)
    grid = torch.stack([coords[2] * scale[2] - 1, coords[1] * scale[1] - 1, coords[0] * scale[0] - 1], -1)[None]
    stack = torch.from_numpy(np.concatenate([signal, tpl.brain[None]]))[None]
    sampled = F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    del grid, stack
    brain = sampled[4].numpy() > 0.5
    flat = np.flatnonzero(brain)  # brain voxels of the box, as flat indices (cheaper than index tuples)

    # Labels: nearest-neighbour lookup, only where the map lands inside a tumour's box.
    seg_flat = np.zeros(brain.size, np.uint8)
    pts_all = coords.numpy().reshape(3, -1)[:, flat]
    for box in boxes:
        near = np.ones(len(flat), bool)
        for axis, sl in enumerate(box):
            near &= (pts_all[axis] >= sl.start - 0.5) & (pts_all[axis] <= sl.stop - 0.5)
        if near.any():
            values = ndi.map_coordinates(labels, pts_all[:, near], order=0, mode="constant", cval=0, prefilter=False)
            sel = flat[near]
            seg_flat[sel] = np.where(values > 0, values, seg_flat[sel])
    del pts_all

    out: dict[str, np.ndarray] = {}
    sigma = cfg.noise * float(np.max(tpl.signal))
    gains = rng.uniform(0.85, 1.15, len(MODALITY_ORDER)) * 1000.0
    for m, name in enumerate(MODALITY_ORDER):
        values = sampled[m].numpy().reshape(-1)[flat] * np.exp(log_bias[m].numpy().reshape(-1)[flat])
        real = values + sigma * rng.standard_normal(values.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(values.shape, dtype=np.float32)
        magnitude = np.sqrt(real * real + imag * imag) * gains[m]  # Rician: magnitude of a complex signal
        box_values = np.zeros(brain.size, np.int16)
        box_values[flat] = np.clip(np.rint(magnitude), 1, 32767).astype(np.int16)  # 0 = outside the brain
        volume = np.zeros(OUTPUT_SHAPE, np.int16)
        volume[out_box] = box_values.reshape(brain.shape)
        out[name] = volume
    seg = np.zeros(OUTPUT_SHAPE, np.uint8)
    seg[out_box] = seg_flat.reshape(brain.shape)
    out["seg"] = seg
    return out


# ----------------------------------------------------------------------------------------------
# The cohort on disk


def _write_nifti(path: Path, data: np.ndarray) -> None:
    """Write a .nii.gz atomically and reproducibly (nibabel's writer: gzip mtime 0, so same data -> same bytes)."""
    import nibabel as nib

    img = nib.Nifti1Image(data, OUTPUT_AFFINE)
    hdr = img.header
    hdr.set_xyzt_units("mm")
    hdr.set_qform(OUTPUT_AFFINE, code=1)
    hdr.set_sform(OUTPUT_AFFINE, code=1)
    hdr["scl_slope"], hdr["scl_inter"] = 1.0, 0.0  # stored values are the values (no NaN "unset" scaling)
    save_nifti(img, path)


def subject_files(cohort_dir: Path, index: int) -> dict[str, Path]:
    sid = subject_id(index)
    return {k: cohort_dir / sid / f"{sid}_{k}.nii.gz" for k in (*MODALITY_ORDER, "seg")}


def _write_subject(cfg: PhantomConfig, cohort_dir: str, index: int) -> int:
    files = subject_files(Path(cohort_dir), index)
    volumes = make_subject(cfg, index)
    for kind, path in files.items():  # seg last: a subject with a seg file has all five
        _write_nifti(path, volumes[kind])
    return index


def _init_worker(parent: int) -> None:
    """A worker lives no longer than the process that started it: killed with its parent (kill -9
    included), a worker would go on writing the cohort without the parent's lock, then hang."""
    import torch

    torch.set_num_threads(1)
    die_with_parent(parent)


def _generate_cohort(cfg: PhantomConfig, out: Path, progress: bool) -> Path:
    from tqdm.auto import tqdm

    # called by artifacts.ensure, which holds the cohort's lock and has removed a killed writer's temp files
    if not (out / "NOTICE.txt").exists():
        atomic_write_text(out / "NOTICE.txt", NOTICE_TEXT)
    todo = [i for i in range(cfg.num_subjects) if not all(p.exists() for p in subject_files(out, i).values())]
    if not todo:
        return out
    log.info("phantom cohort %s: generating %d of %d subjects", out, len(todo), cfg.num_subjects)
    bar = tqdm(total=len(todo), desc="phantom subjects", unit="subject", disable=not progress)
    workers = max(1, min(int(cfg.workers), len(todo), os.cpu_count() or 1))
    if workers == 1:
        for i in todo:
            _write_subject(cfg, str(out), i)
            bar.update()
    else:
        with spawn_context() as ctx, ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                                         initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_write_subject, cfg, str(out), i) for i in todo]
            for future in as_completed(futures):
                future.result()
                bar.update()
    bar.close()
    return out


def phantom_cohort(phantom: Mapping[str, Any], num_subjects: int, data_dir: str | Path, progress: bool = True) -> Path:
    """The phantom cohort artefact (the stage `brats_phantom`): exactly subjects 0..num_subjects-1 of the
    `phantom` config under `<data_dir>/brats_phantom/<hash of the config and num_subjects>/`, found or made
    (resumable, under a lock), with `artifact.yaml` (config, hash, versions, subjects, label convention).
    Subject i is the same bytes whatever `num_subjects`."""
    from synthmed import artifacts

    cfg = PhantomConfig.from_mapping({**dict(phantom), "num_subjects": int(num_subjects)})
    config = {**cfg.key(), "num_subjects": cfg.num_subjects}
    path = Path(data_dir) / "brats_phantom" / config_hash(config)
    extra = {"subjects": [subject_id(i) for i in range(cfg.num_subjects)], "labels": brats_labels.convention(),
             "layout": "BraTS 2020/2021", "licence": "NOTICE.txt (the MNI ICBM152 template)"}
    return artifacts.ensure(path, "brats_phantom", config, lambda out: _generate_cohort(cfg, out, progress), extra)
