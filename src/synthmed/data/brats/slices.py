"""BraTS axial slices: a LightningDataModule that loads the slice cache (`synthmed.data.brats.cache`, a stage),
with subject-level splits.

`BratsSliceDataModule` only loads: it is given `root` (the BraTS folder, read again by the volume
evaluation) and `cache` (the slice cache made from it) and never makes either.

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

from synthmed.data.brats import labels
from synthmed.data.brats.cache import check_modalities
from synthmed.data.brats.discovery import (
    BratsSubject,
    discover_subjects,
    summarize,
)

log = logging.getLogger(__name__)

MAX_EMPTY_FRACTION = 0.5  # the cache holds at most as many tumour-free slices as tumour slices
TARGETS = ("wt", "tc", "et", "multiclass")


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Each fraction in [0, 1] and some subjects left for training, or `test_fraction=1` with `val_fraction=0`
    (every subject a test subject: a test-only job, experiment=brats_eval); else a ValueError naming the key."""
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"data.{key}={value}: a share of the subjects, in [0, 1]")
    if float(test_fraction) == 1.0:
        if float(val_fraction) != 0.0:
            raise ValueError(f"data.test_fraction=1 makes every subject a test subject, so data.val_fraction="
                             f"{val_fraction} has none to take: set data.val_fraction=0")
    elif float(val_fraction) + float(test_fraction) >= 1.0:
        raise ValueError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} leave no subject "
                         f"for training (their sum must be < 1; data.test_fraction=1 with data.val_fraction=0 tests "
                         f"every subject, as experiment=brats_eval does)")


def target_from_seg(seg: torch.Tensor, target: str) -> torch.Tensor:
    """The training target (int64) from mapped labels 0..3."""
    if target == "multiclass":
        return seg.long()
    return torch.isin(seg, torch.tensor(labels.REGION_INDICES[target])).long()


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
    """Axial BraTS slices, loaded from `cache` (a slice cache of `root`, made by the `brats_slice_cache` stage).

    Subjects are split train/val/test with `split_seed` (`val_fraction`, `test_fraction`; `test_fraction=1`
    with `val_fraction=0` makes every subject a test subject, for test-only jobs); `num_train_subjects` keeps the
    first that many training subjects of the seeded order (None: all; nested: 4 holds the 2 of 2; val and test
    unchanged), the scarce resource of medical data being patients, not slices; training takes
    `num_train_slices` slices (None: all tumour slices; more than the split holds is an error) of which
    `empty_fraction` have no tumour; val/test take all tumour slices of their subjects plus the same share
    without. `aug` (config with `_target_` or an object with `extra_samples(dataset, seed)`) appends its samples
    to the training set, or replaces the real slices with them when `replace_real=True` (still learning from them).
    It never makes data: a missing `root` or `cache` is a ValueError/FileNotFoundError naming the key.
    """

    def __init__(
        self,
        root: str | None,
        cache: str | None,
        modalities: Sequence[str],
        target: str,
        image_size: int,
        num_train_slices: int | None,
        num_train_subjects: int | None,
        empty_fraction: float,
        val_fraction: float,
        test_fraction: float,
        split_seed: int | None,
        batch_size: int,
        num_workers: int,
        aug: Any,
    ) -> None:
        super().__init__()
        modalities = check_modalities(modalities)
        if target not in TARGETS:
            raise ValueError(f"data.target={target!r} is not one of {list(TARGETS)}")
        if not 0.0 <= float(empty_fraction) <= MAX_EMPTY_FRACTION:
            raise ValueError(f"data.empty_fraction={empty_fraction} must be in [0, {MAX_EMPTY_FRACTION}] (the cache's cap)")
        check_fractions(val_fraction, test_fraction)
        if num_train_slices is not None and int(num_train_slices) < 1:
            raise ValueError(f"data.num_train_slices={num_train_slices}: give a positive number of slices, or null")
        if num_train_subjects is not None and int(num_train_subjects) < 1:
            raise ValueError(f"data.num_train_subjects={num_train_subjects}: give a positive number of subjects, or null")
        for key, value in (("root", root), ("cache", cache)):
            if value is None or not isinstance(value, (str, Path)):
                raise ValueError(f"data.{key}={value!r}: BratsSliceDataModule loads a folder and makes none; give "
                                 f"a path (the brats_* experiments make it with a stage: data.root = brats_phantom, "
                                 f"data.cache = brats_slice_cache, resolved by synthmed.artifacts.resolve)")
        self.root, self.cache = Path(root), Path(cache)
        self.modalities = modalities
        self.target = target
        self.image_size = int(image_size)
        self.num_train_slices = None if num_train_slices is None else int(num_train_slices)
        self.num_train_subjects = None if num_train_subjects is None else int(num_train_subjects)
        self.empty_fraction = float(empty_fraction)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.split_seed = int(split_seed or 0)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.aug = aug
        self.subjects: list[BratsSubject] = []
        self.splits: dict[str, list[str]] = {}
        self.datasets: dict[str, Dataset] = {}
        self.real_train: Dataset | None = None  # the real training slices (what an augmenter learns from)
        self.train_items: dict[str, int] = {}  # {"real": n, "extra": m}: what the training set is made of
        self._aug_name = "none"
        self.summary: dict[str, Any] = {}
        self._prepared = False

    # ---- subjects and cache ------------------------------------------------------------------
    def _subject_dir(self, subject: BratsSubject) -> Path:
        return self.cache / subject.id

    def subject(self, sid: str) -> BratsSubject:
        for s in self.subjects:
            if s.id == sid:
                return s
        raise KeyError(f"unknown subject {sid!r}")

    def prepare_data(self) -> None:
        """Open the slice cache and find its subjects' files under `root` (no NIfTI is read)."""
        if self._prepared:
            return
        from synthmed.artifacts import read_metadata

        try:
            meta = read_metadata(self.cache)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"data.cache={self.cache}: {err} (make it with the brats_slice_cache stage)") from err
        made = meta.get("config", {})
        for key, mine in (("image_size", self.image_size), ("modalities", self.modalities)):
            if made.get(key) != mine:
                raise ValueError(f"data.cache={self.cache} holds {key}={made.get(key)}, but data.{key}={mine}")
        if Path(meta["root"]) != self.root.expanduser().resolve():
            raise ValueError(f"data.cache={self.cache} was made from {meta['root']}, not data.root={self.root}")
        found = {s.id: s for s in discover_subjects(self.root)}
        gone = [sid for sid in meta["subjects"] if sid not in found]
        if gone:
            raise FileNotFoundError(f"data.root={self.root} no longer holds subject(s) {gone} of data.cache={self.cache}")
        self.subjects = [found[sid] for sid in meta["subjects"]]
        self.summary = summarize(self.subjects)
        log.info("BraTS subjects: %s", self.summary)
        self._prepared = True

    # ---- splits and slices ---------------------------------------------------------------------
    @property
    def test_only(self) -> bool:
        """Every subject is a test subject (`test_fraction=1`): nothing to train or validate on."""
        return self.test_fraction == 1.0

    def _split(self) -> dict[str, list[str]]:
        ids = sorted(s.id for s in self.subjects)
        if self.test_only:
            return {"train": [], "val": [], "test": ids}
        n = len(ids)
        n_val = max(1, round(self.val_fraction * n)) if self.val_fraction > 0 else 0
        n_test = max(1, round(self.test_fraction * n)) if self.test_fraction > 0 else 0
        if n - n_val - n_test < 1:
            raise ValueError(f"{n} subject(s) are too few for data.val_fraction={self.val_fraction} and "
                             f"data.test_fraction={self.test_fraction}")
        order = [ids[i] for i in np.random.default_rng(self.split_seed).permutation(n)]
        train = order[n_val + n_test:]
        if self.num_train_subjects is not None:
            if self.num_train_subjects > len(train):
                raise ValueError(f"data.num_train_subjects={self.num_train_subjects}: the split (seed {self.split_seed}) "
                                 f"has only {len(train)} training subjects of {n}: ask for at most that many, or null")
            train = train[:self.num_train_subjects]  # the first k of the seeded order: nested as k grows
        return {"train": sorted(train), "val": sorted(order[:n_val]), "test": sorted(order[n_val:n_val + n_test])}

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
            if n_tumour + n_empty < count:  # a silent shortfall would mislabel a point of a data-efficiency curve
                raise ValueError(f"data.num_train_slices={count}: the {name} split (seed {self.split_seed}: {len(ids)} "
                                 f"subjects) has only {n_tumour + n_empty} slices ({len(tumour)} with tumour, {n_empty} without at "
                                 f"data.empty_fraction={f}): ask for at most that many, or null for all of them")
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
        if self.test_only and stage not in ("test", "predict"):
            raise ValueError("data.test_fraction=1 makes every subject a test subject: nothing to train or "
                             "validate on (a test-only job is experiment=brats_eval ckpt=<best.ckpt>; to train, set "
                             "data.test_fraction < 1)")
        if self.datasets:
            return
        self.prepare_data()
        self.splits = self._split()
        rng = np.random.default_rng([self.split_seed, 1])
        counts = {"train": self.num_train_slices, "val": None, "test": None}
        for name in ("train", "val", "test"):
            rows = self._rows(self.splits[name], counts[name], rng, name) if self.splits[name] else []
            self.datasets[name] = BratsSliceDataset(rows, self.target)
        self.real_train = self.datasets["train"]
        augmenter = None if self.test_only else self._augmenter()  # no training set to add to
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
                "cache": str(self.cache)}

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
