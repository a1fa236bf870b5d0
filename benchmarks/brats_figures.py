"""Figures for docs/brats.md: phantom subjects (four modalities + labels at the largest tumour slice).

    python benchmarks/brats_figures.py [--cohort data/brats_phantom/<hash>] [--out docs/figures]
Prints one JSON line with the files written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cohort", default=None)
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--out", default="docs/figures")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synthmed.data.brats.discovery import MODALITIES, discover_subjects, read_volume

    cohort = Path(args.cohort) if args.cohort else sorted(Path("data/brats_phantom").glob("*/artifact.yaml"))[0].parent
    subjects = discover_subjects(cohort)[: args.subjects]
    fig, axes = plt.subplots(len(subjects), 5, figsize=(10, 2.1 * len(subjects)), dpi=90, squeeze=False)
    for row, s in enumerate(subjects):
        seg = read_volume(s.files["seg"], np.uint8)
        z = int(np.argmax((seg > 0).sum(axis=(0, 1))))
        for col, m in enumerate(MODALITIES):
            ax = axes[row, col]
            ax.imshow(np.rot90(read_volume(s.files[m])[:, :, z]), cmap="gray")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(m)
        lab = np.rot90(seg[:, :, z]).astype(float)
        axes[row, 4].imshow(np.rot90(read_volume(s.files["flair"])[:, :, z]), cmap="gray")
        axes[row, 4].imshow(np.ma.masked_where(lab == 0, lab), cmap="jet", vmin=0, vmax=4, alpha=0.6,
                            interpolation="nearest")
        axes[row, 4].set_axis_off()
        axes[row, 0].text(2, 12, f"{s.id} z={z}", color="yellow", fontsize=7)
        if row == 0:
            axes[row, 4].set_title("seg (1 NCR, 2 ED, 4 ET)")
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "brats_phantom.png")
    print(json.dumps({"figures": [str(out / "brats_phantom.png")], "cohort": str(cohort)}))


if __name__ == "__main__":
    main()
