"""BraTS data speed: phantom generation (s/subject, peak memory of one worker) and slice loading from the
.npy cache vs decoding NIfTI. Prints one JSON line.

    python benchmarks/brats_data.py [--subjects 4] [--workers 1] [--image-size 128] [--data-dir /tmp/brats_bench]

phantom_*: a cohort of --subjects generated in --workers processes (1 thread each), in a fresh process;
  s_per_subject = wall time / subjects; steady = from the moment every worker finished its first subject
  to the last finish, per subject (needs --subjects > --workers).
nifti_per_item_slices_per_s: what a loader without a cache pays: per item, decode the subject's five
  NIfTI files, z-score, take the slice and resize it (measured on --per-item items).
nifti_bulk_slices_per_s: decoding whole subjects and keeping every cached slice (the first run's cost).
cache_slices_per_s: items from the memory-mapped cache, as the training loader reads them.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from multiprocessing import get_context
from pathlib import Path


def phantom_knobs() -> dict:
    """data.root.phantom of the real config (the one home of the phantom's knobs)."""
    from omegaconf import OmegaConf

    from synthmed.utils import compose_config

    cfg = compose_config(["experiment=brats_phantom"])
    return OmegaConf.to_container(cfg.data.root.phantom, resolve=True)


def _phantom_child(data_dir: str, n: int, workers: int, queue) -> None:
    import torch

    from synthmed.data.brats.phantom import load_template, phantom_cohort

    torch.set_num_threads(1)  # as the cohort's worker processes run
    t0 = time.perf_counter()
    load_template()
    t1 = time.perf_counter()
    root = phantom_cohort({**phantom_knobs(), "workers": workers}, n, data_dir, progress=False)
    t2 = time.perf_counter()
    # steady state: from the moment every worker has finished its first subject (which pays the process
    # start and the torch/scipy warm-up) to the last finish
    done = sorted(max(f.stat().st_mtime for f in d.iterdir()) for d in Path(root).glob("BraTSPhantom_*"))
    steady = (done[-1] - done[workers - 1]) / (len(done) - workers) if len(done) > workers else None
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    queue.put({"root": str(root), "template_load_s": t1 - t0, "generate_s": t2 - t1, "steady_s": steady, "peak_rss_mb": peak / 1024})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="phantom processes (the cohort default is 2)")
    parser.add_argument("--per-item", type=int, default=8, help="items decoded from NIfTI one by one")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    import tempfile

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="brats_bench_"))
    if any(data_dir.glob("brats_phantom/*/BraTSPhantom_*")) or any(data_dir.glob("brats_slices/*")):
        sys.exit(f"{data_dir} already holds a cohort or cache; give an empty --data-dir to measure generation")
    ctx = get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_phantom_child, args=(str(data_dir), args.subjects, args.workers, queue))
    proc.start()
    phantom = queue.get()
    proc.join()

    import numpy as np

    from synthmed.data.brats.cache import _resize, extract_subject, preprocess_volumes, slice_cache
    from synthmed.data.brats.slices import BratsSliceDataModule

    root = phantom.pop("root")
    t0 = time.perf_counter()
    cache = slice_cache(root, data_dir, ["flair", "t1", "t1ce", "t2"], args.image_size, False, progress=False)
    nifti_s = time.perf_counter() - t0  # decodes NIfTI, z-scores, resizes, writes the cache
    dm = BratsSliceDataModule(root=root, cache=str(cache), modalities=["flair", "t1", "t1ce", "t2"], target="wt",
                              image_size=args.image_size, num_train_slices=None, empty_fraction=0.0, val_fraction=0,
                              test_fraction=0, split_seed=0, batch_size=16, num_workers=0, aug=None)
    dm.setup()
    n_cached = sum(len(np.load(p, mmap_mode="r")) for p in dm.cache.rglob("slice.npy"))
    # NIfTI path again, without writing: what a loader without the cache pays per slice
    t0 = time.perf_counter()
    for s in dm.subjects:
        extract_subject(s, dm.modalities, dm.image_size)
    nifti_only_s = time.perf_counter() - t0
    ds = dm.datasets["train"]
    # A loader without a cache: every item decodes its subject's volumes and keeps one slice.
    picks = np.random.default_rng(0).choice(len(ds), size=min(args.per_item, len(ds)), replace=False)
    t0 = time.perf_counter()
    for i in picks:
        cached, row = ds.rows[int(i)]
        images, _, seg = preprocess_volumes(dm.subject(cached.subject), dm.modalities)
        z = int(cached.slices[row])
        _resize(images[None, ..., z], dm.image_size, "bilinear")
        _resize(seg[None, None, ..., z].astype(np.float32), dm.image_size, "nearest")
    per_item_s = (time.perf_counter() - t0) / len(picks)
    t0 = time.perf_counter()
    for _ in range(3):
        for i in range(len(ds)):
            ds[i]
    cache_s = (time.perf_counter() - t0) / 3
    print(json.dumps({
        "benchmark": "brats_data", "subjects": args.subjects, "image_size": args.image_size,
        "phantom_workers": args.workers,
        "phantom_s_per_subject": round(phantom["generate_s"] / args.subjects, 2),
        "phantom_s_per_subject_steady": None if phantom["steady_s"] is None else round(phantom["steady_s"], 2),
        "phantom_template_load_s": round(phantom["template_load_s"], 2),
        "phantom_peak_rss_mb": round(phantom["peak_rss_mb"], 1),
        "cached_slices": n_cached,
        "nifti_per_item_slices_per_s": round(1 / per_item_s, 2),
        "nifti_bulk_slices_per_s": round(n_cached / nifti_only_s, 1),
        "first_run_extract_and_cache_s": round(nifti_s, 2),
        "train_items": len(ds),
        "cache_slices_per_s": round(len(ds) / cache_s, 1),
        "cache_vs_nifti_per_item": round(per_item_s * len(ds) / cache_s, 1),
        "cache_vs_nifti_bulk": round(nifti_only_s / n_cached * len(ds) / cache_s, 1),
        "cpu_threads": __import__("torch").get_num_threads(),
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
