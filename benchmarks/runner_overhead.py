"""Time per training step of the lesion classifier under the synthmed runner vs a plain PyTorch loop.

Same model (LesionCNN, 50x50, batch 100), same in-memory frames, same optimiser, one process, CPU.
The runner job is a real `synthmed.run.run` on a composed `experiment=colon_cls` config (CSV + offline
W&B loggers, checkpointing, metrics), timed by a callback between consecutive training batches; the plain
loop is timed the same way. Prints one JSON line.

    python benchmarks/runner_overhead.py [--frames 2000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def steady_step_times(starts: list[float], steps_per_epoch: int) -> list[float]:
    """Gaps between consecutive batch starts, skipping the first epoch (warm-up) and epoch boundaries,
    measured exactly as `synthmed.callbacks.StepTimer` measures the runner."""
    gaps = []
    for i in range(steps_per_epoch + 1, len(starts)):
        if i % steps_per_epoch != 0:
            gaps.append(starts[i] - starts[i - 1])
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")

    from frames import make_frames
    from hydra.utils import instantiate

    from synthmed.run import run
    from synthmed.utils import compose_config

    tmp = Path(tempfile.mkdtemp(prefix="synthmed-bench-"))
    frames = make_frames(tmp / "frames", n=args.frames, size=64)

    # 1. the synthmed runner (a real job: loggers, checkpoints, metrics), timed by its StepTimer callback
    overrides = ["experiment=colon_cls", "scale=paper", f"data.root={frames}", f"trainer.max_epochs={args.epochs}",
                 "+callbacks.step_timer._target_=synthmed.callbacks.StepTimer", "+trainer.enable_progress_bar=false"]
    cfg = compose_config(overrides, output_dir=tmp / "run")
    plain_cfg = compose_config(overrides)  # the same data and model for the plain loop
    del cfg.hydra  # a real job's config has no hydra node; HydraConfig holds it
    run(cfg)
    epochs = json.loads((tmp / "run" / "step_times.json").read_text())["epochs"]
    runner_times = [gap for epoch in epochs[1:] for gap in epoch]  # first epoch is warm-up
    dm = instantiate(plain_cfg.data)
    dm.setup()
    steps_per_epoch = len(dm.train_dataloader())

    # 2. a plain PyTorch loop on the same model, data and optimiser
    torch.manual_seed(0)
    module = instantiate(plain_cfg.model)
    net = module.net
    opt = torch.optim.Adam(net.parameters(), lr=float(plain_cfg.model.lr))
    starts = []
    for _ in range(args.epochs):
        net.train()
        for batch in dm.train_dataloader():
            starts.append(time.perf_counter())
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(batch["image"]), batch["label"])
            loss.backward()
            opt.step()
        with torch.no_grad():  # the runner validates every epoch too
            net.eval()
            for batch in dm.val_dataloader():
                module(batch["image"])
    plain_times = steady_step_times(starts, steps_per_epoch)

    runner_ms = statistics.median(runner_times) * 1000
    plain_ms = statistics.median(plain_times) * 1000
    print(json.dumps({
        "benchmark": "runner_overhead", "frames": args.frames, "epochs": args.epochs, "batch_size": 100,
        "image_size": 50, "threads": torch.get_num_threads(), "steps_timed": len(runner_times),
        "runner_ms_per_step": round(runner_ms, 2), "plain_ms_per_step": round(plain_ms, 2),
        "ratio": round(runner_ms / plain_ms, 3),
    }))


if __name__ == "__main__":
    main()
