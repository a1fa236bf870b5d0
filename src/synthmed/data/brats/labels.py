"""The BraTS label convention, written once: labels, regions, the indices models use, their colours.

Files use the classic numbering: 0 background, 1 NCR/NET (necrotic and non-enhancing core), 2 ED (oedema),
4 ET (enhancing tumour); BraTS 2023 labels ET 3 instead (mapped to 4 on reading). Regions: WT = {1, 2, 4},
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
    }
