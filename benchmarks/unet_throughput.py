"""U-Net training images/s of `experiment=brats_seg` at the sizes of a scale. Prints one JSON line a scale.

The model is the experiment's own (`cfg.model` composed from the shipped configs and instantiated), the
batch size and slice size are the scale's. One step = zero_grad + forward + the module's training loss
(cross-entropy + soft Dice) + backward + optimiser step, on random tensors of the right shape (speed does
not depend on what the pixels show). The first step is a warm-up and not counted; torch uses every core.
`--trainer gpu` runs the steps where and how `trainer=gpu` trains (conf/trainer/gpu.yaml: one CUDA device, its
`precision` as autocast + gradient scaling), each step timed up to a CUDA synchronisation.

    python benchmarks/unet_throughput.py --scales cpu,paper [--steps 5] [--trainer gpu]
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

AUTOCAST = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}  # Lightning's mixed precisions


def compose_experiment(scale: str, *overrides: str):
    """`experiment=brats_seg` at `scale` (plus overrides), composed as `python -m synthmed` would."""
    return compose_config(["experiment=brats_seg", f"scale={scale}", *overrides])


def step_times(module: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, steps: int,
               precision: str = "32-true") -> list[float]:
    """Seconds per optimiser step, warm-up step excluded. On CUDA each step ends with a synchronisation."""
    optimizer = module.configure_optimizers()
    module.train()
    cuda = image.device.type == "cuda"
    dtype = AUTOCAST.get(str(precision))
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and dtype is torch.float16)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(image.device.type, dtype=dtype, enabled=dtype is not None):
            loss = module.loss(module(image), label)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if cuda:
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["cpu,paper"], help="e.g. cpu,paper or cpu paper")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per scale (after one warm-up step)")
    parser.add_argument("--trainer", default="cpu", help="conf/trainer/<name>.yaml: cpu (default) or gpu")
    args = parser.parse_args()
    scales = [s for arg in args.scales for s in arg.split(",") if s]
    if args.steps < 1:
        parser.error(f"--steps={args.steps} must be >= 1")
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    for scale in scales:
        cfg = compose_experiment(scale, f"trainer={args.trainer}")
        if cfg.trainer.accelerator not in ("cpu", "gpu", "cuda"):
            parser.error(f"--trainer {args.trainer}: accelerator {cfg.trainer.accelerator} is not cpu or gpu")
        device = torch.device("cpu" if cfg.trainer.accelerator == "cpu" else "cuda")
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.error(f"--trainer {args.trainer} trains on a CUDA device, and torch sees none")
        precision = str(cfg.trainer.get("precision") or "32-true")
        torch.manual_seed(0)
        module = instantiate(cfg.model).to(device)
        batch, size, channels = int(cfg.data.batch_size), int(cfg.data.image_size), int(cfg.model.net.in_channels)
        image = torch.randn(batch, channels, size, size).to(device)
        label = (torch.rand(batch, size, size) < 0.1).long().to(device)  # ~10% tumour pixels
        times = step_times(module, image, label, args.steps, precision)
        median = statistics.median(times)
        print(json.dumps({
            "benchmark": "unet_throughput", "scale": scale, "trainer": args.trainer, "precision": precision,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "batch_size": batch, "image_size": size, "in_channels": channels,
            "base_channels": int(cfg.model.net.base_channels), "depth": int(cfg.model.net.depth),
            "params_m": round(sum(p.numel() for p in module.parameters()) / 1e6, 3), "timed_steps": len(times),
            "median_step_s": round(median, 4), "min_step_s": round(min(times), 4),
            "train_images_per_s": round(batch / median, 2),
        }), flush=True)


if __name__ == "__main__":
    main()
