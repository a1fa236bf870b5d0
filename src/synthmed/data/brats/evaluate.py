"""Volume evaluation of a slice segmenter on the test subjects (a Lightning callback).

After testing, each test subject's volume is predicted slice by slice (the same z-scoring and resizing
as training, logits resized back to the full slice), saved as a BraTS-format NIfTI with the input's
affine and header (`<output_dir>/volumes/<subject>_pred.nii.gz`), and scored per region against the
ground truth: `<output_dir>/volumes/metrics.csv` with columns subject, region, dice, iou, hd95 (mm).
The means are logged as `test/vol_dice_<region>`, `test/vol_iou_<region>`, `test/vol_hd95_<region>`.

Label values written: multiclass -> 0/1/2/4 (NCR, ED, ET); a single-region target is written as the
BraTS label whose region it is (WT -> 2, TC -> 1, ET -> 4), so reading the file as BraTS labels gives
back exactly the predicted region.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from synthmed.data.brats.discovery import read_volume
from synthmed.data.brats.labels import INDEX_TO_BRATS, REGION_INDICES, REGION_LABEL
from synthmed.data.brats.slices import _resize, preprocess_volumes
from synthmed.utils import atomic_path

log = logging.getLogger(__name__)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """Distances (mm) from the surface voxels of `a` to the surface of `b` (both non-empty bool arrays)."""
    sa = a & ~ndi.binary_erosion(a)
    sb = b & ~ndi.binary_erosion(b)
    dist_to_b = ndi.distance_transform_edt(~sb, sampling=spacing)
    return dist_to_b[sa]


def region_scores(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> dict[str, float]:
    """Dice, IoU and the 95th-percentile symmetric Hausdorff distance of two masks.

    Both empty: dice = iou = 1, hd95 = 0; one empty: dice = iou = 0, hd95 = nan."""
    inter, ps, ts = int((pred & truth).sum()), int(pred.sum()), int(truth.sum())
    if ps == 0 and ts == 0:
        return {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    dice = 2 * inter / (ps + ts)
    iou = inter / (ps + ts - inter)
    if ps == 0 or ts == 0:
        return {"dice": dice, "iou": iou, "hd95": float("nan")}
    both = pred | truth
    idx = np.argwhere(both)
    lo, hi = np.maximum(idx.min(0) - 2, 0), idx.max(0) + 3
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    p, t = pred[box], truth[box]
    d = np.concatenate([surface_distances(p, t, spacing), surface_distances(t, p, spacing)])
    return {"dice": dice, "iou": iou, "hd95": float(np.percentile(d, 95))}


class BratsVolumeEvaluation(L.Callback):
    def __init__(self, subdir: str, save_nifti: bool, max_subjects: int | None, batch_size: int) -> None:
        self.subdir, self.save_nifti, self.max_subjects = subdir, bool(save_nifti), max_subjects
        self.batch_size = int(batch_size)
        self.rows: list[dict[str, Any]] = []

    @torch.no_grad()
    def predict_volume(self, module: L.LightningModule, images: np.ndarray, brain: np.ndarray,
                       image_size: int) -> np.ndarray:
        """(M, X, Y, Z) z-scored images -> (X, Y, Z) predicted class indices."""
        _, X, Y, Z = images.shape
        out = np.zeros((X, Y, Z), np.uint8)
        zs = np.flatnonzero(brain.any(axis=(0, 1)))
        for start in range(0, len(zs), self.batch_size):
            chunk = zs[start:start + self.batch_size]
            x = _resize(np.moveaxis(images[..., chunk], -1, 0), image_size, "bilinear")
            logits = module(torch.from_numpy(np.ascontiguousarray(x)).float().to(module.device))
            logits = F.interpolate(logits.float(), size=(X, Y), mode="bilinear", align_corners=False)
            out[..., chunk] = np.moveaxis(logits.argmax(1).cpu().numpy().astype(np.uint8), 0, -1)
        out[~brain] = 0
        return out

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if dm is None or not getattr(dm, "splits", None) or trainer.sanity_checking:
            return
        target = dm.target
        regions = dict(REGION_INDICES) if target == "multiclass" else {target: (1,)}
        out_dir = Path(trainer.default_root_dir) / self.subdir
        out_dir.mkdir(parents=True, exist_ok=True)
        was_training = pl_module.training
        pl_module.eval()
        self.rows = []
        ids = dm.splits.get("test", [])[: self.max_subjects]
        for sid in ids:
            subject = dm.subject(sid)
            images, brain, seg = preprocess_volumes(subject, dm.modalities)
            pred = self.predict_volume(pl_module, images, brain, dm.image_size)
            img = _header_image(subject.files[dm.modalities[0]])
            spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
            for region, classes in regions.items():
                truth = np.isin(seg, REGION_INDICES[region])
                mask = np.isin(pred, classes)
                self.rows.append({"subject": sid, "region": region, **region_scores(mask, truth, spacing)})
            if self.save_nifti:
                if target == "multiclass":
                    labels = INDEX_TO_BRATS[pred]
                else:
                    labels = (pred == 1).astype(np.uint8) * REGION_LABEL[target]
                _write_like(img, labels, out_dir / f"{sid}_pred.nii.gz")
        if was_training:
            pl_module.train()
        _write_csv(out_dir / "metrics.csv", self.rows)
        for region in regions:
            rows = [r for r in self.rows if r["region"] == region]
            for key in ("dice", "iou", "hd95"):
                values = np.array([r[key] for r in rows], float)
                finite = values[np.isfinite(values)]
                pl_module.log(f"test/vol_{key}_{region}", float(finite.mean()) if finite.size else float("nan"))
        log.info("volume evaluation of %d test subjects written to %s", len(ids), out_dir)


def _header_image(path: Path):
    import nibabel as nib

    read_volume(path)  # raises a clear error for a broken file
    return nib.load(str(path))


def _write_like(reference, labels: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(labels.astype(np.uint8), reference.affine, reference.header.copy())
    img.set_data_dtype(np.uint8)
    img.header["scl_slope"], img.header["scl_inter"] = 1, 0
    with atomic_path(path) as tmp:
        tmp.write_bytes(_to_gz_bytes(img))


def _to_gz_bytes(img) -> bytes:
    import gzip

    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["subject", "region", "dice", "iou", "hd95"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
