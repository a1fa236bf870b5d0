"""BraTS axial slices as a LightningDataModule (subject-level splits, cached as memory-mappable .npy).

Per subject, the extraction (read NIfTI, z-score each modality within the brain, resize slices to
`image_size`) runs once; its result is cached under

    <data_dir>/brats_slices/<hash of (modalities, image_size, version)>/<subject>-<hash of its files>/
        image.npy (S, M, H, W) float16, seg.npy (S, H, W) uint8 (0..3), brain.npy (S, H, W) uint8,
        slice.npy (S,) int16 (axial index), tumour.npy (S,) bool, done.json (written last)

Cached slices: every slice with tumour, plus non-tumour brain slices (evenly spaced, as many as there are
tumour slices) so that `empty_fraction` (up to 0.5) can be served. A slice's tumour flag is read from its
resized mask, so a "tumour slice" always shows tumour at `image_size` (a few voxels of tumour can vanish
when 240 px become 64). A second run with the same settings opens no NIfTI.

Items (the batch contract other modules rely on)::

    {"image": float32 (M, H, W), "label": int64 (H, W), "seg": int64 (H, W) 0..3 (= BraTS 0,1,2,4),
     "brain": float32 (1, H, W), "subject": str, "slice": int}
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from synthmed.data.brats.discovery import (
    MODALITIES,
    BratsSubject,
    check_subject,
    discover_subjects,
    read_volume,
    summarize,
    to_brats_labels,
)
from synthmed.utils import atomic_path, atomic_write_json, config_hash, file_lock

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: tumour.npy from the resized mask (1: from the full-resolution one)
MAX_EMPTY_FRACTION = 0.5  # the cache holds at most as many tumour-free slices as tumour slices
TARGETS = ("wt", "tc", "et", "multiclass")
# Regions over the mapped labels (1 NCR/NET, 2 ED, 3 ET).
REGION_CLASSES: dict[str, tuple[int, ...]] = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}
_TO_INDEX = np.zeros(256, np.uint8)
_TO_INDEX[[1, 2, 4]] = [1, 2, 3]  # BraTS 0,1,2,4 -> 0,1,2,3


def target_from_seg(seg: torch.Tensor, target: str) -> torch.Tensor:
    """The training target (int64) from mapped labels 0..3."""
    if target == "multiclass":
        return seg.long()
    return torch.isin(seg, torch.tensor(REGION_CLASSES[target])).long()


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
    return images, brain, _TO_INDEX[seg]


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


class _CachedSubject:
    """One subject's cached arrays, opened lazily with mmap (cheap to pickle into loader workers)."""

    def __init__(self, directory: Path, subject: str):
        self.directory, self.subject = Path(directory), subject
        self.tumour = np.load(self.directory / "tumour.npy")
        self.slices = np.load(self.directory / "slice.npy")
        self._arrays: dict[str, np.ndarray] | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {k: np.load(self.directory / f"{k}.npy", mmap_mode="r") for k in ("image", "seg", "brain")}
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}


class BratsSliceDataset(Dataset):
    """Items for a list of (cached subject, row) pairs."""

    def __init__(self, rows: Sequence[tuple[_CachedSubject, int]], target: str):
        self.rows, self.target = list(rows), target

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        subject, row = self.rows[index]
        a = subject.arrays()
        seg = torch.from_numpy(np.asarray(a["seg"][row], dtype=np.int64))
        return {
            "image": torch.from_numpy(np.asarray(a["image"][row], dtype=np.float32)),
            "label": target_from_seg(seg, self.target),
            "seg": seg,
            "brain": torch.from_numpy(np.asarray(a["brain"][row], dtype=np.float32))[None],
            "subject": subject.subject,
            "slice": int(subject.slices[row]),
        }


class _ItemList(Dataset):
    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


class BratsSliceDataModule(L.LightningDataModule):
    """Axial BraTS slices: `root` (any 2018-2023 layout) or, when None, the phantom cohort in `data_dir`.

    Subjects are split train/val/test with `split_seed` (`val_fraction`, `test_fraction`); training takes
    `num_train_slices` slices (None: all tumour slices) of which `empty_fraction` have no tumour; val/test
    take all tumour slices of their subjects plus the same share without. `aug` (config with `_target_`
    or an object with `extra_samples(dataset, seed)`) appends its samples to the training set, or replaces
    the real slices with them when it has `replace_real=True` (it still learns from the real slices).
    """

    def __init__(
        self,
        root: str | None = None,
        data_dir: str = "data",
        phantom: Mapping[str, Any] | None = None,
        num_subjects: int = 30,
        skip_invalid: bool = False,
        modalities: Sequence[str] = MODALITIES,
        target: str = "wt",
        image_size: int = 128,
        num_train_slices: int | None = 290,
        empty_fraction: float = 0.0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        split_seed: int | None = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        aug: Any = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        modalities = list(modalities)
        bad = [m for m in modalities if m not in MODALITIES]
        if bad or not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(f"data.modalities={modalities}: choose distinct names from {list(MODALITIES)}")
        if target not in TARGETS:
            raise ValueError(f"data.target={target!r} is not one of {list(TARGETS)}")
        if not 0.0 <= float(empty_fraction) <= MAX_EMPTY_FRACTION:
            raise ValueError(f"data.empty_fraction={empty_fraction} must be in [0, {MAX_EMPTY_FRACTION}]: the slice "
                             "cache keeps at most as many slices without tumour as with")
        if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
            raise ValueError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} "
                             "must be >= 0 and leave subjects for training")
        self.root = root
        self.data_dir = Path(data_dir)
        self.phantom = dict(phantom or {})
        self.num_subjects = int(num_subjects)
        self.skip_invalid = bool(skip_invalid)
        self.modalities = modalities
        self.target = target
        self.image_size = int(image_size)
        self.num_train_slices = None if num_train_slices is None else int(num_train_slices)
        self.empty_fraction = float(empty_fraction)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.split_seed = int(split_seed or 0)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.aug = aug
        self.progress = bool(progress)
        self.subjects: list[BratsSubject] = []
        self.splits: dict[str, list[str]] = {}
        self.datasets: dict[str, Dataset] = {}
        self.real_train: Dataset | None = None  # the real training slices (what an augmenter learns from)
        self.train_items: dict[str, int] = {}  # {"real": n, "extra": m}: what the training set is made of
        self._aug_name = "none"
        self.summary: dict[str, Any] = {}
        self.nifti_reads = 0
        self._prepared = False

    # ---- subjects and cache ------------------------------------------------------------------
    def cache_root(self) -> Path:
        key = {"modalities": self.modalities, "image_size": self.image_size, "version": CACHE_VERSION}
        return self.data_dir / "brats_slices" / config_hash(key)

    def _subject_dir(self, subject: BratsSubject) -> Path:
        return self.cache_root() / f"{subject.id}-{config_hash(subject.signature())}"

    def subject(self, sid: str) -> BratsSubject:
        for s in self.subjects:
            if s.id == sid:
                return s
        raise KeyError(f"unknown subject {sid!r}")

    def _find(self) -> list[BratsSubject]:
        if self.root is None:
            from synthmed.data.brats.phantom import PhantomConfig, generate_cohort, subject_id

            cfg = PhantomConfig.from_mapping({**self.phantom, "num_subjects": self.num_subjects})
            root = generate_cohort(cfg, self.data_dir, progress=self.progress)
            wanted = {subject_id(i) for i in range(cfg.num_subjects)}
            return [s for s in discover_subjects(root) if s.id in wanted]
        return discover_subjects(self.root)

    def _skip_or_raise(self, problems: list[tuple[BratsSubject, Exception]]) -> None:
        if not problems:
            return
        if not self.skip_invalid:
            raise problems[0][1]
        message = (f"data.skip_invalid=true: skipped {len(problems)} invalid subject(s):\n  "
                   + "\n  ".join(f"{s.id}: {e}" for s, e in problems))
        warnings.warn(message, UserWarning, stacklevel=3)
        log.warning(message)

    def prepare_data(self) -> None:
        """Find subjects (making the phantom cohort if needed), check them, and cache their slices."""
        if self._prepared:
            return
        found = self._find()
        self.summary = summarize(found)
        log.info("BraTS subjects: %s", self.summary)
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
        self._skip_or_raise(problems)
        root = self.cache_root()
        with file_lock(root / ".lock"):  # parallel jobs: one extracts, the others wait
            self._extract(present)
        self.subjects = [s for s in present if (self._subject_dir(s) / "done.json").exists()]
        if len(self.subjects) < 1:
            raise ValueError("no valid BraTS subject to train on")
        self._prepared = True

    def _extract(self, present: list[BratsSubject]) -> None:
        """Cache the slices of the subjects not cached yet (one folder each, `done.json` written last)."""
        from tqdm.auto import tqdm

        todo = [s for s in present if not (self._subject_dir(s) / "done.json").exists()]
        problems: list[tuple[BratsSubject, Exception]] = []
        for s in tqdm(todo, desc="extracting BraTS slices", unit="subject", disable=not self.progress or not todo):
            try:
                arrays = extract_subject(s, self.modalities, self.image_size)
            except (FileNotFoundError, ValueError) as err:
                problems.append((s, err))
                continue
            self.nifti_reads += 1
            out = self._subject_dir(s)
            out.mkdir(parents=True, exist_ok=True)
            for name, array in arrays.items():
                with atomic_path(out / f"{name}.npy") as tmp, open(tmp, "wb") as f:
                    np.save(f, array)
            atomic_write_json(out / "done.json", {"subject": s.id, "source": s.source, "grade": s.grade,
                                                  "slices": int(len(arrays["slice"]))})
        self._skip_or_raise(problems)

    # ---- splits and slices ---------------------------------------------------------------------
    def _split(self) -> dict[str, list[str]]:
        ids = sorted(s.id for s in self.subjects)
        n = len(ids)
        n_val = max(1, round(self.val_fraction * n)) if self.val_fraction > 0 else 0
        n_test = max(1, round(self.test_fraction * n)) if self.test_fraction > 0 else 0
        if n - n_val - n_test < 1:
            raise ValueError(f"{n} subject(s) are too few for data.val_fraction={self.val_fraction} and "
                             f"data.test_fraction={self.test_fraction}")
        order = [ids[i] for i in np.random.default_rng(self.split_seed).permutation(n)]
        return {"train": sorted(order[n_val + n_test:]), "val": sorted(order[:n_val]),
                "test": sorted(order[n_val:n_val + n_test])}

    def _rows(self, ids: Sequence[str], count: int | None, rng: np.random.Generator, name: str):
        tumour, empty = [], []
        for sid in ids:
            cached = _CachedSubject(self._subject_dir(self.subject(sid)), sid)
            for row, has in enumerate(cached.tumour):
                (tumour if has else empty).append((cached, row))
        f = self.empty_fraction
        wanted_empty = round(f / (1 - f) * len(tumour)) if count is None else round(f * count)
        n_empty = min(len(empty), wanted_empty)
        if n_empty < wanted_empty:
            warnings.warn(f"data.empty_fraction={f}: only {n_empty} of {wanted_empty} slices without tumour "
                          f"available in the {name} subjects", UserWarning, stacklevel=3)
        if count is None:
            n_tumour = len(tumour)
        else:
            n_tumour = min(len(tumour), count - n_empty)
            if n_tumour + n_empty < count:
                warnings.warn(f"data.num_train_slices={count}: only {n_tumour + n_empty} slices available "
                              f"in the {name} subjects", UserWarning, stacklevel=3)
        pick_t = np.sort(rng.choice(len(tumour), n_tumour, replace=False)) if n_tumour else []
        pick_e = np.sort(rng.choice(len(empty), n_empty, replace=False)) if n_empty else []
        return [tumour[i] for i in pick_t] + [empty[i] for i in pick_e]

    def _augmenter(self) -> Any:
        aug = self.aug
        if aug is None:
            return None
        if isinstance(aug, Mapping) or hasattr(aug, "_target_") or type(aug).__name__ == "DictConfig":
            if "_target_" not in aug:
                raise ValueError("aug: the config needs a _target_ (e.g. synthmed.augment.TransformAugmenter)")
            from hydra.utils import instantiate

            aug = instantiate(aug)
        if not hasattr(aug, "extra_samples"):
            raise TypeError(f"aug: {type(aug).__name__} has no extra_samples(dataset, seed)")
        return aug

    def _complete(self, item: Mapping[str, Any], index: int, like: Mapping[str, Any] | None) -> dict[str, Any]:
        """An augmenter's sample in the item format: the target is derived from `seg` when missing. `like`
        (a real item) fixes the shapes, so a mismatch fails here, naming the regime, not in a later batch."""
        out = dict(item)
        out["seg"] = torch.as_tensor(out["seg"]).long()
        out["image"] = torch.as_tensor(out["image"]).float()
        if "label" not in out:
            out["label"] = target_from_seg(out["seg"], self.target)
        if "brain" in out:
            out["brain"] = torch.as_tensor(out["brain"]).float()
        out.setdefault("subject", "synthetic")
        out.setdefault("slice", -1)
        for key in ("image", "label", "seg", "brain") if like is not None else ():
            got = tuple(out[key].shape) if key in out else None
            if got != tuple(like[key].shape):
                raise ValueError(f"aug={self._aug_name}: extra sample {index} has {key} shape {got}, the real "
                                 f"slices {tuple(like[key].shape)} (data.modalities={self.modalities}, "
                                 f"data.image_size={self.image_size})")
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.prepare_data()
        self.splits = self._split()
        rng = np.random.default_rng([self.split_seed, 1])
        counts = {"train": self.num_train_slices, "val": None, "test": None}
        for name in ("train", "val", "test"):
            self.datasets[name] = BratsSliceDataset(self._rows(self.splits[name], counts[name], rng, name), self.target)
        self.real_train = self.datasets["train"]
        augmenter = self._augmenter()
        self._aug_name = str(getattr(augmenter, "name", "none"))
        extra: list[dict[str, Any]] = []
        if augmenter is not None:  # the augmenter learns from (or transforms) the real training slices
            like = self.real_train[0] if len(self.real_train) else None
            samples = augmenter.extra_samples(self.real_train, seed=self.split_seed)
            extra = [self._complete(item, i, like) for i, item in enumerate(samples)]
        replace_real = bool(getattr(augmenter, "replace_real", False))
        if replace_real and not extra:
            raise ValueError(f"aug={self._aug_name} has replace_real=true but made no samples: no training data")
        # the training set: the real slices + the augmenter's samples, or its samples alone (replace_real)
        parts = ([] if replace_real else [self.real_train]) + ([_ItemList(extra)] if extra else [])
        self.datasets["train"] = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        self.train_items = {"real": 0 if replace_real else len(self.real_train), "extra": len(extra)}
        log.info("BraTS splits (subjects): %s; slices: %s; training set: %d real + %d extra slices (aug=%s)",
                 {k: len(v) for k, v in self.splits.items()}, {k: len(v) for k, v in self.datasets.items()},
                 self.train_items["real"], self.train_items["extra"], self._aug_name)

    def describe(self) -> dict[str, Any]:
        return {"subjects": self.summary, "splits": {k: len(v) for k, v in self.splits.items()},
                "slices": {k: len(v) for k, v in self.datasets.items()}, "train_items": dict(self.train_items),
                "cache": str(self.cache_root())}

    # ---- loaders -------------------------------------------------------------------------------
    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[name], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
