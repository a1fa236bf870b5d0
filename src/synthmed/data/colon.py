"""Colonoscopy frames as a LightningDataModule: rendered datasets, ImageFolder and Kvasir-SEG layouts."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CLASS_NAMES = ("normal", "lesion")


class FrameDataset(Dataset):
    """Frames held in memory as uint8 arrays; items are dicts `{"image": float (3,H,W), "label": ..., "id": str,
    "path": str}` (`path`: the image file the frame was read from).

    `label` is the class (int64 scalar) for classification, the 0/1 mask (int64 HxW) for segmentation. A
    classification dataset given `masks` (the layout has them: rendered, Kvasir-SEG) also yields `"mask"`, the
    frame's 0/1 lesion mask (float HxW), turned with the image (the classifier's `mask_weight` uses it).
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, ids: list[str], paths: list[str], flips: bool,
                 masks: np.ndarray | None = None) -> None:
        self.images, self.targets, self.ids, self.paths, self.flips = images, targets, ids, paths, flips
        self.masks = masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div_(255.0).sub_(0.5).div_(0.5)
        label = torch.as_tensor(self.targets[i]).long()
        mask = None if self.masks is None else torch.from_numpy(self.masks[i]).float()
        if self.flips:  # a random one of the 8 flips/quarter turns (an endoscope rolls freely), masks alike
            k, flip = (int(v) for v in torch.randint(0, 4, (2,)))
            image = torch.rot90(image, k, (1, 2))
            image = image.flip(2) if flip % 2 else image
            if label.ndim == 2:
                label = torch.rot90(label, k, (0, 1))
                label = label.flip(1) if flip % 2 else label
            if mask is not None:
                mask = torch.rot90(mask, k, (0, 1))
                mask = mask.flip(1) if flip % 2 else mask
        item = {"image": image, "label": label, "id": self.ids[i], "path": self.paths[i]}
        if mask is not None:
            item["mask"] = mask
        return item


def _has_lesion(targets: np.ndarray) -> np.ndarray:
    """Per frame, 1 if it shows a lesion: its class (classification) or whether its mask has pixels."""
    flat = targets.reshape(len(targets), -1) if len(targets) else np.zeros((0, 1), dtype=targets.dtype)
    return (flat.max(1, initial=0) > 0).astype(int)


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _detect_layout(root: Path) -> str:
    if (root / "manifest.csv").exists():
        return "rendered"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "kvasir"
    if any((root / c).is_dir() for c in CLASS_NAMES):  # one class alone is a test set (e.g. lesion frames only)
        return "imagefolder"
    raise FileNotFoundError(
        f"{root} is not a frames dataset: expected manifest.csv (a rendered dataset), "
        f"images/ + masks/ (Kvasir-SEG layout) or {'/, '.join(CLASS_NAMES)}/ (ImageFolder layout, one or both)"
    )


def _plain_id(value: str | None, where: str) -> str:
    """A manifest id names a file inside the dataset: a plain name, never a path that could leave it."""
    frame = (value or "").strip()
    if not frame or frame in (".", "..") or "/" in frame or "\\" in frame or "\0" in frame:
        raise ValueError(f"{where}: frame id {value!r} is not a plain file name (no path separators or '..')")
    return frame


def read_frame_index(root: Path, layout: str = "auto") -> tuple[str, list[dict[str, Any]]]:
    """List the frames of a dataset dir: `(layout, [{"id", "image", "mask" or None, "label", "sequence"}])`.

    `label` is None in the Kvasir-SEG layout (the data module reads it from the mask: lesion iff it has pixels).
    `sequence` is the manifest's `sequence` column of a rendered dataset (frames of one video sequence), None
    where there is no such column or the cell is empty."""
    root = Path(root)
    layout = _detect_layout(root) if layout == "auto" else layout
    rows: list[dict[str, Any]] = []
    if layout == "rendered":
        manifest = root / "manifest.csv"
        if not manifest.exists():
            raise FileNotFoundError(f"{manifest} is missing")
        with manifest.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {"id", "label"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{manifest} lacks the column(s) {sorted(missing)}")
            has_sequences = "sequence" in (reader.fieldnames or [])
            for row in reader:
                where = f"{manifest}, line {reader.line_num}"
                frame = _plain_id(row["id"], where)
                text = (row["label"] or "").strip()
                if text not in ("0", "1"):
                    shown = repr(row["label"]) if row["label"] is not None else "no value"
                    raise ValueError(f"{where}: frame {frame} has label {shown}; expected 0 (normal) or 1 (lesion)")
                label = int(text)
                row["id"] = frame
                sequence = (row["sequence"] or "").strip() if has_sequences else ""
                rows.append(
                    {"id": row["id"], "image": root / "images" / f"{row['id']}.png",
                     "mask": root / "masks" / f"{row['id']}.png", "label": label, "sequence": sequence or None}
                )
    elif layout == "kvasir":
        masks = {p.stem: p for p in _list_images(root / "masks")}
        for image in _list_images(root / "images"):
            if image.stem not in masks:
                raise FileNotFoundError(f"{image} has no mask in {root / 'masks'}")
            rows.append({"id": image.stem, "image": image, "mask": masks[image.stem], "label": None, "sequence": None})
    elif layout == "imagefolder":
        for label, cls in enumerate(CLASS_NAMES):
            if not (root / cls).is_dir():
                continue
            for image in _list_images(root / cls):
                rows.append({"id": f"{cls}/{image.stem}", "image": image, "mask": None, "label": label, "sequence": None})
    else:
        raise ValueError(f"data.layout={layout!r}; expected auto, rendered, kvasir or imagefolder")
    if not rows:
        raise ValueError(f"{root} holds no frames ({layout} layout)")
    return layout, rows


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int):
    """Indices of train/val/test, stratified by label, shuffled by `seed`."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for value in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == value))
        n_val, n_test = round(len(idx) * val_fraction), round(len(idx) * test_fraction)
        parts[1] += idx[:n_val].tolist()
        parts[2] += idx[n_val : n_val + n_test].tolist()
        parts[0] += idx[n_val + n_test :].tolist()
    return [np.sort(np.asarray(p, dtype=int)) for p in parts]


def grouped_split(labels: np.ndarray, groups: list[str], val_fraction: float, test_fraction: float, seed: int):
    """Indices of train/val/test with every group (e.g. a video sequence, whose frames are alike) in one split.
    Groups are split as `stratified_split` splits frames, stratified by whether the group holds a lesion frame,
    so the fractions count groups, not frames."""
    names, group_of = np.unique(np.asarray(groups, dtype=object), return_inverse=True)
    has_lesion = np.zeros(len(names), dtype=int)
    np.maximum.at(has_lesion, group_of, np.asarray(labels, dtype=int))
    parts = stratified_split(has_lesion, val_fraction, test_fraction, seed)
    return [np.flatnonzero(np.isin(group_of, part)) for part in parts]


def split_frames(rows: list[dict[str, Any]], strata: np.ndarray, val_fraction: float, test_fraction: float,
                 seed: int) -> list[np.ndarray]:
    """Train/val/test indices of the frames `rows` (from `read_frame_index`) as `ColonFramesDataModule` splits
    them: by sequence (`grouped_split`) when any frame has one, a frame without a sequence being a group of its
    own; else frame by frame (`stratified_split`). `strata`: each frame's class (1 = lesion)."""
    if any(r.get("sequence") is not None for r in rows):
        groups = [r["sequence"] if r.get("sequence") is not None else f"\0{r['id']}" for r in rows]
        return grouped_split(strata, groups, val_fraction, test_fraction, seed)
    return stratified_split(strata, val_fraction, test_fraction, seed)


class ColonFramesDataModule(L.LightningDataModule):
    """Colonoscopy frames for classification (normal vs lesion) or lesion segmentation.

    `root` is a frames dir (rendered dataset, ImageFolder or Kvasir-SEG layout). The module only loads: a
    rendered dataset is made beforehand by its stage (`experiment=colon_render`, or the runner resolving the
    `synthmed.artifacts.colon_frames` node of `data=colon_rendered`). Frames are split stratified by label with
    `split_seed` (by sequence when the manifest has a `sequence` column: `grouped_split`) and resized to
    `image_size` x `image_size` (bilinear, aspect ratio not kept). A Kvasir-SEG frame's class is whether its
    mask has pixels. `test_fraction=1` makes every frame a test frame (`experiment=colon_eval`).
    """

    def __init__(
        self,
        root: str | None,
        task: str,
        layout: str,
        image_size: int,
        batch_size: int,
        val_fraction: float,
        test_fraction: float,
        split_seed: int | None,
        num_workers: int,
        flips: bool,
    ) -> None:
        super().__init__()
        if task not in ("classification", "segmentation"):
            raise ValueError(f"data.task={task!r}; expected classification or segmentation")
        self.root = Path(root) if root else None
        self.task, self.layout, self.image_size = task, layout, int(image_size)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.fractions = (float(val_fraction), float(test_fraction))
        self.split_seed = 0 if split_seed is None else int(split_seed)
        self.splits: dict[str, FrameDataset] = {}
        self.flips = bool(flips)

    def prepare_data(self) -> None:
        """Check that the frames dir exists (this module never renders)."""
        if self.root is None:
            raise FileNotFoundError(
                "no frames dataset: set data.root=<frames dir>, or render one with "
                "`python -m synthmed experiment=colon_render render.num_frames=<N>`"
            )
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data.root={self.root} does not exist. Render a dataset with "
                f"`python -m synthmed experiment=colon_render` (it is written under data/colon/), "
                f"or point data.root at a folder of frames"
            )

    def describe(self) -> dict[str, Any]:
        """The dataset: root, layout, frames and frames per class; once set up, the frames per class of each
        split too (the loaded ones: Kvasir-SEG classes come from the masks)."""
        layout, rows = read_frame_index(self.root, self.layout)
        labels = [r["label"] for r in rows if r["label"] is not None]
        out: dict[str, Any] = {"root": str(self.root), "layout": layout, "frames": len(rows),
                               "lesion_frames": int(sum(labels)), "normal_frames": int(len(labels) - sum(labels))}
        if self.splits:
            present = {name: _has_lesion(split.targets) for name, split in self.splits.items()}
            out["lesion_frames"] = int(sum(p.sum() for p in present.values()))
            out["normal_frames"] = len(rows) - out["lesion_frames"]
            out["splits"] = {name: {"frames": len(p), "lesion": int(p.sum()), "normal": int(len(p) - p.sum())}
                             for name, p in present.items()}
        return out

    def _load(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Images, targets and, for classification where every frame has a mask file (rendered, Kvasir-SEG),
        the masks too (else None)."""
        size = (self.image_size, self.image_size)
        images = np.empty((len(rows), *size, 3), dtype=np.uint8)
        targets = np.empty((len(rows), *size) if self.task == "segmentation" else (len(rows),), dtype=np.uint8)
        with_masks = self.task == "classification" and all(row["mask"] is not None for row in rows)
        masks = np.empty((len(rows), *size), dtype=np.uint8) if with_masks else None
        for i, row in enumerate(rows):
            try:
                with Image.open(row["image"]) as im:
                    images[i] = np.asarray(im.convert("RGB").resize(size, Image.BILINEAR))
                if masks is not None:
                    with Image.open(row["mask"]) as m:
                        masks[i] = np.asarray(m.convert("L").resize(size, Image.NEAREST)) > 127
                if self.task == "segmentation":
                    if row["mask"] is None:
                        raise ValueError("segmentation needs masks; this layout has none")
                    with Image.open(row["mask"]) as m:
                        targets[i] = np.asarray(m.convert("L").resize(size, Image.NEAREST)) > 127
                elif row["label"] is not None:
                    targets[i] = row["label"]
                elif row["mask"] is not None:  # Kvasir-SEG: a lesion frame is one whose mask has pixels
                    with Image.open(row["mask"]) as m:
                        targets[i] = int((np.asarray(m.convert("L")) > 127).any())
                else:
                    raise ValueError("classification needs labels or masks; this layout has neither")
            except (OSError, ValueError) as err:
                raise ValueError(f"cannot read frame {row['id']} ({row['image']}): {err}") from err
        return images, targets, masks

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()
        layout, rows = read_frame_index(self.root, self.layout)
        images, targets, masks = self._load(rows)
        present = _has_lesion(targets)
        strata = np.array([present[i] if r["label"] is None else r["label"] for i, r in enumerate(rows)])
        train, val, test = split_frames(rows, strata, *self.fractions, seed=self.split_seed)
        ids, paths = [r["id"] for r in rows], [str(r["image"]) for r in rows]
        for name, idx in (("train", train), ("val", val), ("test", test)):
            self.splits[name] = FrameDataset(images[idx], targets[idx], [ids[i] for i in idx],
                                             [paths[i] for i in idx], flips=self.flips and name == "train",
                                             masks=None if masks is None else masks[idx])
        log.info("frames from %s (%s): train %d, val %d, test %d", self.root, layout, len(train), len(val), len(test))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if len(self.splits[split]) == 0:
            raise ValueError(f"the {split} split of {self.root} is empty: the dataset is too small")
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
