"""The BraTS label convention, written once: labels, regions, the indices models use, their colours.

Files use one of two *conventions* (`CONVENTIONS`): the classic numbering up to BraTS 2021 (0 background,
1 NCR/NET (necrotic and non-enhancing core), 2 ED (oedema), 4 ET (enhancing tumour)) or BraTS 2023's, where
ET is 3. Reading maps both to the classic numbering; predictions are written back in the input's own
convention (`from_index`). Regions: WT = {1, 2, 4},
TC = {1, 4}, ET = {4}. Models see the mapped *indices* 0..3 (= 0, 1, 2, 4), and pictures colour them
with `COLOURS`. Every artefact that holds labels carries `convention()` in its metadata.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# classic file numbering
BACKGROUND, NCR, ED, ET = 0, 1, 2, 4
BRATS_LABELS: tuple[int, ...] = (BACKGROUND, NCR, ED, ET)
ET_2023 = 3  # BraTS 2023 labels ET 3
LABELS_2023: tuple[int, ...] = (BACKGROUND, NCR, ED, ET_2023)
NAMES: dict[int, str] = {BACKGROUND: "background", NCR: "NCR/NET", ED: "ED", ET: "ET"}
REGIONS: dict[str, tuple[int, ...]] = {"wt": (NCR, ED, ET), "tc": (NCR, ET), "et": (ET,)}
# the one label of each region that no smaller region holds: a single-region mask written as BraTS labels
REGION_LABEL: dict[str, int] = {"wt": ED, "tc": NCR, "et": ET}

# file conventions: the value each class (background, NCR/NET, ED, ET) has on disk
CLASSIC, BRATS_2023 = "brats2021", "brats2023"
CONVENTIONS: dict[str, tuple[int, ...]] = {CLASSIC: BRATS_LABELS, BRATS_2023: LABELS_2023}
# the BraTS rule for a distance to or from an empty mask (mm): the diagonal of a 240x240x155 volume at 1 mm
MAX_HD95 = 373.13

# mapped indices 0..3, what slices, models and generators use
INDEX_TO_BRATS = np.array(BRATS_LABELS, np.uint8)
BRATS_TO_INDEX = np.zeros(256, np.uint8)
BRATS_TO_INDEX[list(BRATS_LABELS)] = np.arange(len(BRATS_LABELS))
NUM_CLASSES = len(BRATS_LABELS)
REGION_INDICES: dict[str, tuple[int, ...]] = {
    region: tuple(int(BRATS_TO_INDEX[label]) for label in labels) for region, labels in REGIONS.items()
}
TUMOUR_INDICES: tuple[int, ...] = tuple(range(1, NUM_CLASSES))  # NCR/NET, ED, ET

# RGB per index: background, NCR/NET, ED, ET (the usual BraTS overlay colours)
COLOURS = np.array([[0, 0, 0], [220, 40, 40], [60, 200, 60], [250, 220, 30]], dtype=np.uint8)


def to_index(seg: np.ndarray) -> np.ndarray:
    """Labels in the classic numbering (0/1/2/4) -> indices 0..3 (uint8)."""
    return BRATS_TO_INDEX[np.asarray(seg)]


def convention_of(source: str) -> str:
    """The label convention of a subject found in layout `source` (discovery's "2018/2019", "2020/2021" or
    "2023"): ET is 3 in the 2023 layout, 4 before."""
    return BRATS_2023 if str(source) == "2023" else CLASSIC


def from_index(indices: np.ndarray, convention: str = CLASSIC) -> np.ndarray:
    """Indices 0..3 -> the file labels of `convention` (uint8): 0/1/2/4 (classic) or 0/1/2/3 (BraTS 2023)."""
    return np.asarray(CONVENTIONS[convention], np.uint8)[np.asarray(indices)]


def region_label(region: str, convention: str = CLASSIC) -> int:
    """The file label that stands for a single-region mask (`REGION_LABEL`) in `convention`."""
    return int(CONVENTIONS[convention][BRATS_LABELS.index(REGION_LABEL[region])])


def class_labels(target: str) -> dict[int, str]:
    """Names of the classes a model of `target` predicts (for W&B mask layers): multiclass -> the four
    classes, a region (wt/tc/et) -> background/region, anything else (colon `binary`) -> background/lesion."""
    if target == "multiclass":
        return {i: NAMES[label] for i, label in enumerate(BRATS_LABELS)}
    return {0: "background", 1: target.upper() if target in REGIONS else "lesion"}


def colourise(indices: Any) -> np.ndarray:
    """(..., H, W) indices 0..3 (array or tensor) -> (..., H, W, 3) uint8 RGB, one colour per tumour class."""
    if hasattr(indices, "detach"):
        indices = indices.detach().cpu().numpy()
    return COLOURS[np.clip(np.asarray(indices), 0, NUM_CLASSES - 1).astype(np.int64)]


def convention() -> dict[str, Any]:
    """The convention as plain data, for the metadata of artefacts that hold labels."""
    return {
        "labels": list(BRATS_LABELS),  # classic file numbering
        "names": [NAMES[label] for label in BRATS_LABELS],
        "indices": [int(BRATS_TO_INDEX[label]) for label in BRATS_LABELS],  # what each label maps to
        "regions": {k: list(v) for k, v in REGIONS.items()},  # over the labels
        "colours": COLOURS.tolist(),  # RGB per index
        "et_2023": ET_2023,
        "conventions": {name: list(values) for name, values in CONVENTIONS.items()},  # the file numberings
    }
