"""Is a sweep faster as jobs side by side? Training throughput of the brain study's three models (DCGAN,
pix2pix, U-Net) at the sizes of a scale: one process with every core, against `--jobs` processes at once
with an equal share of the cores each (what `hydra/launcher=local_parallel threads=1` does on 2 cores).
Prints one JSON line: images/s of each model both ways (summed over the processes) and their ratio.

Each process builds its model, takes one warm-up step, waits for the others at a barrier, then times
`--steps` steps; its throughput is batch size / median step time. Random batches: speed does not depend on
what the pixels show.

    python benchmarks/parallel_jobs.py --scale cpu --jobs 2 [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gan_throughput import batches  # noqa: E402  (the benchmarks folder is not a package)
from unet_throughput import compose_experiment, step_times  # noqa: E402

MODELS = ("dcgan", "pix2pix", "unet")


def _gan_images_per_s(kind: str, scale: str, steps: int, barrier) -> float:
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from synthmed.callbacks import StepTimer

    cfg = compose_experiment(scale, "aug=gan")  # the generators exactly as aug=gan builds them
    size, bs = int(cfg.data.image_size), int(cfg.scale.gan.batch_size)
    torch.manual_seed(0)
    module = instantiate(cfg.aug.pairs.dcgan if kind == "dcgan" else cfg.aug.pairs.pix2pix)

    class Start(L.Callback):  # every process times the same stretch: they start together after one batch
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == 0:
                barrier.wait()

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, callbacks=[Start(), timer],
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=tmp, limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(module, torch.utils.data.DataLoader(batches(steps + 1, size, bs), batch_size=bs))
    gaps = timer.gaps[0][1:]  # the first gap holds the warm-up batch and the wait at the barrier
    return bs / statistics.median(gaps)


def _unet_images_per_s(scale: str, steps: int, barrier) -> float:
    import torch
    from hydra.utils import instantiate

    cfg = compose_experiment(scale)
    torch.manual_seed(0)
    module = instantiate(cfg.model)
    batch, size, channels = int(cfg.data.batch_size), int(cfg.data.image_size), int(cfg.model.net.in_channels)
    image, label = torch.randn(batch, channels, size, size), (torch.rand(batch, size, size) < 0.1).long()
    step_times(module, image, label, 1)  # warm-up
    barrier.wait()
    return batch / statistics.median(step_times(module, image, label, steps))


def _measure(kind: str, scale: str, steps: int, threads: int, barrier) -> float:
    import logging
    import warnings

    import torch

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    torch.set_num_threads(threads)
    if kind == "unet":
        return _unet_images_per_s(scale, steps, barrier)
    return _gan_images_per_s(kind, scale, steps, barrier)


def images_per_s(kind: str, scale: str, steps: int, jobs: int, cores: int) -> float:
    """Images/s of `jobs` processes training `kind` at once, `cores // jobs` threads each, summed."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(jobs)
        with ctx.Pool(jobs) as pool:
            args = [(kind, scale, steps, max(1, cores // jobs), barrier)] * jobs
            return sum(pool.starmap(_measure, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--jobs", type=int, default=2, help="processes side by side (compared with 1)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per process, after a warm-up")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    if args.jobs < 2 or args.steps < 3:
        parser.error("--jobs must be >= 2 and --steps >= 3")
    result = {"benchmark": "parallel_jobs", "scale": args.scale, "cores": cores, "jobs": args.jobs,
              "threads_per_job": max(1, cores // args.jobs)}
    for kind in MODELS:
        one = images_per_s(kind, args.scale, args.steps, 1, cores)
        side_by_side = images_per_s(kind, args.scale, args.steps, args.jobs, cores)
        result[f"{kind}_images_per_s_one_job"] = round(one, 2)
        result[f"{kind}_images_per_s_{args.jobs}_jobs"] = round(side_by_side, 2)
        result[f"{kind}_ratio"] = round(side_by_side / one, 3)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
