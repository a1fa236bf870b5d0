"""Real brain slices beside each synthesis route's, from `brats_embed` runs (one job a route):

    python -m synthmed -m experiment=brats_embed scale=cpu aug=gan,gan_tissue,gan_spade,gan_inpaint
    python scripts/make_routes_figure.py <sweep dir> [<run dir> ...] [--out docs/figures/routes_real_vs_synthetic_cpu.png]

Each argument is a multirun's dir (its jobs, in order) or one run's dir.

One row of real training slices, then one row a route (FLAIR, the first modality), titled with its two-sample
accuracy (inside the painted region for a route that paints into real slices, whose outline is drawn).
Prints one JSON line with the file written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _job(job_dir: Path) -> dict:
    from omegaconf import OmegaConf

    from synthmed.resolvers import register_resolvers

    register_resolvers()  # the configs' ${len:...}

    metrics = json.loads((job_dir / "metrics.json").read_text())
    if metrics.get("status") != "ok":
        raise ValueError(f"{job_dir}: the job did not finish (status {metrics.get('status')!r})")
    config = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    config.data.root, config.data.cache = metrics["artifacts"]["data.root"], metrics["artifacts"]["data.cache"]
    config.data.aug = None  # the data module without its augmenter: the real training split
    data = OmegaConf.to_container(config.data, resolve=True)
    # the route's knobs given on the command line (e.g. aug.pairs.pix2pix.anatomy=tissue), shown in its title
    knobs = [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml") if str(o).startswith("aug.")]
    return {"aug": str(config.aug.name), "knobs": knobs, "pairs": metrics["artifacts"]["aug.pairs"],
            "test": metrics["test"], "data": data}


def _window(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99])
    return np.clip((image - lo) / (hi - lo + 1e-6), 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", type=Path, nargs="+", help="brats_embed multirun dirs or run dirs")
    parser.add_argument("--out", type=Path, default=Path("docs/figures/routes_real_vs_synthetic_cpu.png"))
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synthmed.augment.gan import real_training_split

    found = [[d] if (d / "metrics.json").is_file() else sorted(p.parent for p in d.glob("*/metrics.json"))
             for d in args.dirs]
    for d, dirs in zip(args.dirs, found, strict=True):
        if not dirs:
            raise FileNotFoundError(f"{d}: no metrics.json in it or in its job dirs (a brats_embed run or multirun?)")
    jobs = [_job(d) for dirs in found for d in dirs]
    real = real_training_split(jobs[0]["data"]).real_train
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(real), args.columns, replace=False)
    rows = [("real", [real[int(i)]["image"].numpy()[0] for i in picks], None)]
    names = {"gan": "pix2pix (aug=gan)", "gan_tissue": "pix2pix given tissue classes (aug=gan_tissue)",
             "gan_spade": "SPADE (aug=gan_spade)", "gan_inpaint": "painted (aug=gan_inpaint)"}
    for job in jobs:
        pairs = np.load(job["pairs"])
        idx = rng.choice(len(pairs["seg"]), args.columns, replace=False)
        region = pairs["region"][idx, 0] if "region" in pairs else None
        test = job["test"]
        c2st = test.get("test/region_c2st_accuracy", test["test/c2st_accuracy"])
        where = "in the painted region" if region is not None else "whole slice"
        route = " ".join([names.get(job["aug"], job["aug"]), *job["knobs"]])
        title = f"{route}: two-sample accuracy {c2st:.2f} ({where})"
        rows.append((title, list(pairs["image"][idx, 0]), region))
    fig, axes = plt.subplots(len(rows), args.columns, figsize=(1.6 * args.columns, 1.85 * len(rows)), dpi=100,
                             squeeze=False)
    for r, (title, images, region) in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(_window(image), cmap="gray", vmin=0, vmax=1)
            if region is not None:
                ax.contour(region[c], levels=[0.5], colors="yellow", linewidths=0.6)
            ax.set_axis_off()
        axes[r, 0].text(0, 1.04, title, transform=axes[r, 0].transAxes, fontsize=9, va="bottom")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.03, hspace=0.18)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    plt.close(fig)
    print(json.dumps({"figure": str(args.out), "routes": [job["aug"] for job in jobs]}))


if __name__ == "__main__":
    main()
