"""BraTS scores of a predicted mask against the ground truth: Dice, IoU and HD95 from MONAI with the BraTS
rules for empty masks, and the BraTS 2023 lesion-wise Dice and HD95.

Rules (BraTS): both masks empty -> Dice 1, IoU 1, HD95 0; exactly one empty -> Dice 0, IoU 0, HD95
`labels.MAX_HD95` (373.13 mm, the volume's diagonal). No score is ever NaN, so a missed tumour weighs in
every mean. HD95 is the larger of the two directed 95th percentiles of surface distances (MONAI's
`compute_hausdorff_distance(..., percentile=95)`), not the 95th percentile of the pooled distances.

Lesion-wise (BraTS 2023): the ground truth's connected components (full connectivity: 26 in 3D) are the
lesions; each is dilated by `dilation` voxels and every predicted component touching the dilated lesion is
matched to it; the lesion scores Dice/HD95 against the union of its matches (a missed lesion: 0 / 373.13).
Predicted components matched to no lesion are false positives and score 0 / 373.13 too. The lesion-wise
score is the mean over lesions and false positives. (Unlike the challenge's script, lesions are not merged
when their dilations touch, and no minimum lesion volume applies.)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

from synthmed.data.brats.labels import MAX_HD95

SCORES = ("dice", "iou", "hd95", "lesion_dice", "lesion_hd95", "lesions", "fp_lesions")


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def region_scores(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """Dice, IoU (MONAI) and HD95 in mm (MONAI, symmetric: max of the two directed 95th percentiles) of two
    boolean masks of equal shape, with the BraTS rules for empty masks; never NaN."""
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in shape")
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    if not has_pred or not has_truth:
        return {"dice": 0.0, "iou": 0.0, "hd95": MAX_HD95}
    # float64: Dice and IoU as exact as the counts allow; surfaces and distances only in a box around both masks (a margin keeps the outer surface voxels)
    box = _box(pred | truth, margin=2)
    p = torch.from_numpy(np.ascontiguousarray(pred[box]))[None, None].double()
    t = torch.from_numpy(np.ascontiguousarray(truth[box]))[None, None].double()
    spacing = None if spacing is None else [float(s) for s in spacing]
    with warnings.catch_warnings():  # MONAI warns about an argument its own code passes to get_mask_edges
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=spacing)
    return {"dice": float(compute_dice(p, t, include_background=True)),
            "iou": float(compute_iou(p, t, include_background=True)), "hd95": float(hd95)}


def lesion_scores(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None,
                  dilation: int = 3) -> dict[str, float]:
    """BraTS 2023 lesion-wise Dice and HD95 (mm) of two boolean masks (module docstring), with the number of
    ground-truth lesions and of false-positive predicted components."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    structure = ndi.generate_binary_structure(truth.ndim, truth.ndim)  # full connectivity: 26 in 3D
    lesions, n_lesions = ndi.label(truth, structure)
    components, n_components = ndi.label(pred, structure)
    if n_lesions == 0 and n_components == 0:
        return {"lesion_dice": 1.0, "lesion_hd95": 0.0, "lesions": 0, "fp_lesions": 0}
    dice, hd95, matched = [], [], set()
    for k in range(1, n_lesions + 1):
        box = _box(lesions == k, margin=dilation + 1)
        lesion = lesions[box] == k
        zone = ndi.binary_dilation(lesion, structure, iterations=dilation)
        hits = np.unique(components[box][zone])
        hits = hits[hits > 0]
        matched.update(int(h) for h in hits)
        scores = region_scores(np.isin(components, hits), lesions == k, spacing)
        dice.append(scores["dice"])
        hd95.append(scores["hd95"])
    false_positives = n_components - len(matched)
    count = n_lesions + false_positives
    return {"lesion_dice": float(sum(dice) / count),
            "lesion_hd95": float((sum(hd95) + false_positives * MAX_HD95) / count),
            "lesions": int(n_lesions), "fp_lesions": int(false_positives)}


def brats_scores(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """`region_scores` and `lesion_scores` of one region (keys: `SCORES`)."""
    return {**region_scores(pred, truth, spacing), **lesion_scores(pred, truth, spacing)}
