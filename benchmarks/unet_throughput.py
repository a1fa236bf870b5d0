"""U-Net training images/s of `experiment=brats_seg` at the sizes of a scale. Prints one JSON line a scale.

The model is the experiment's own (`cfg.model` composed from the shipped configs and instantiated), the
batch size and slice size are the scale's. One step = zero_grad + forward + the module's training loss
(cross-entropy + soft Dice) + backward + optimiser step, on random tensors of the right shape (speed does
not depend on what the pixels show). The first step is a warm-up and not counted; torch uses every core.

    python benchmarks/unet_throughput.py --scales cpu,paper [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from hydra.utils import instantiate

from synthmed.utils import compose_config


def compose_experiment(scale: str, *overrides: str):
    """`experiment=brats_seg` at `scale` (plus overrides), composed as `python -m synthmed` would."""
    return compose_config(["experiment=brats_seg", f"scale={scale}", *overrides])


def step_times(module: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, steps: int) -> list[float]:
    """Seconds per optimiser step, warm-up step excluded."""
    optimizer = module.configure_optimizers()
    module.train()
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = module.loss(module(image), label)
        loss.backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["cpu,paper"], help="e.g. cpu,paper or cpu paper")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per scale (after one warm-up step)")
    args = parser.parse_args()
    scales = [s for arg in args.scales for s in arg.split(",") if s]
    if args.steps < 1:
        parser.error(f"--steps={args.steps} must be >= 1")
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    for scale in scales:
        cfg = compose_experiment(scale)
        torch.manual_seed(0)
        module = instantiate(cfg.model)
        batch, size, channels = int(cfg.data.batch_size), int(cfg.data.image_size), int(cfg.model.net.in_channels)
        image = torch.randn(batch, channels, size, size)
        label = (torch.rand(batch, size, size) < 0.1).long()  # ~10% tumour pixels
        times = step_times(module, image, label, args.steps)
        median = statistics.median(times)
        print(json.dumps({
            "benchmark": "unet_throughput", "scale": scale, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "batch_size": batch, "image_size": size, "in_channels": channels,
            "base_channels": int(cfg.model.net.base_channels), "depth": int(cfg.model.net.depth),
            "params_m": round(sum(p.numel() for p in module.parameters()) / 1e6, 3), "timed_steps": len(times),
            "median_step_s": round(median, 4), "min_step_s": round(min(times), 4),
            "train_images_per_s": round(batch / median, 2),
        }), flush=True)


if __name__ == "__main__":
    main()
