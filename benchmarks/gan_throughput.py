"""Training images/s of the tumour generator (DCGAN), the two brain generators (pix2pix of `aug=gan`,
SPADE of `aug=gan_spade`) and the tumour painter of `aug=gan_inpaint` (on whole slices, and on `--window` px
around each region, `aug.pairs.inpaint.window`), and synthesis pairs/s (sample label maps + translate them, with each brain
generator), at the sizes of a scale. Prints one JSON line a scale.

Batches are label maps with random elliptic tumours inside a disc-shaped brain, and random images:
throughput does not depend on what the pixels show.

`--trainer gpu` trains where and how `trainer=gpu` does (conf/trainer/gpu.yaml: accelerator, devices,
precision), each step timed up to a CUDA synchronisation. Synthesis runs where the run's synthesis runs: on
the CPU, since Lightning hands a trained module back on the CPU (`synthesis_device` in the line).

    python benchmarks/gan_throughput.py --scales cpu paper [--steps 6] [--window 64] [--trainer gpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from synthmed.callbacks import StepTimer

SCALES = Path(__file__).resolve().parents[1] / "conf" / "scale"


class SyncedStepTimer(StepTimer):
    """StepTimer that waits for the GPU's queued work before reading the clock (CUDA runs asynchronously)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)


def trainer_settings(name: str) -> dict:
    """accelerator, devices and precision of conf/trainer/<name>.yaml, composed as the runner composes it."""
    from synthmed.utils import compose_config

    trainer = compose_config(["experiment=brats_seg", f"trainer={name}"]).trainer
    return {"accelerator": str(trainer.accelerator), "devices": trainer.devices,
            "precision": str(trainer.get("precision") or "32-true")}


def batches(n: int, size: int, batch_size: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    brain = ((xx**2 + yy**2) < 0.8).float()
    items = []
    for _ in range(n * batch_size):
        cx, cy, r = (torch.rand(3, generator=g) * torch.tensor([0.8, 0.8, 0.25]) - torch.tensor([0.4, 0.4, -0.1]))
        d = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt()
        seg = torch.zeros(size, size, dtype=torch.long)
        seg[d < r] = 2
        seg[d < 0.6 * r] = 3
        seg[d < 0.3 * r] = 1
        items.append({"image": torch.randn(4, size, size, generator=g), "seg": seg, "brain": brain[None]})
    return items


def generators(scale: str, window: int):
    """The generators exactly as `aug=gan`, `aug=gan_spade` and `aug=gan_inpaint` build them at `scale` (composed
    config, aug.pairs.*): the tumour generator, pix2pix, SPADE, the painter on whole slices and on windows."""
    from hydra.utils import instantiate

    from synthmed.utils import compose_config

    cfg = compose_config(["experiment=brats_seg", "aug=gan", f"scale={scale}"])
    spade = compose_config(["experiment=brats_seg", "aug=gan_spade", f"scale={scale}"])
    painters = [compose_config(["experiment=brats_seg", "aug=gan_inpaint", f"scale={scale}",
                                f"aug.pairs.inpaint.window={w}"]).aug.pairs.inpaint for w in ("null", window)]
    return (instantiate(cfg.aug.pairs.dcgan), instantiate(cfg.aug.pairs.pix2pix), instantiate(spade.aug.pairs.pix2pix),
            *(instantiate(p) for p in painters))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scales", nargs="+", default=["cpu", "paper"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--window", type=int, default=64, help="the painter's window, px")
    parser.add_argument("--trainer", default="cpu", help="conf/trainer/<name>.yaml: cpu (default) or gpu")
    args = parser.parse_args()
    settings = trainer_settings(args.trainer)
    if settings["accelerator"] != "cpu" and not torch.cuda.is_available():
        parser.error(f"--trainer {args.trainer} trains on accelerator {settings['accelerator']}, and torch sees "
                     "no CUDA device")
    for scale in args.scales:
        s = yaml.safe_load((SCALES / f"{scale}.yaml").read_text())
        gan, size, bs = s["gan"], s["brats"]["image_size"], s["gan"]["batch_size"]
        result = {"benchmark": "gan_throughput", "scale": scale, "trainer": args.trainer, **settings,
                  "device": torch.cuda.get_device_name() if settings["accelerator"] != "cpu" else "cpu",
                  "synthesis_device": "cpu", "threads": torch.get_num_threads(),
                  "batch_size": bs, "dcgan_size": gan["dcgan_size"], "slice_size": size}
        torch.manual_seed(0)
        dcgan, pix2pix, spade, painter, windowed = generators(scale, args.window)  # from the real configs
        result["pix2pix_upsample"] = pix2pix.hparams.upsample
        result["inpaint_window"] = args.window
        items = batches(max(args.steps + 1, 4), size, bs)  # synthesis below draws 4 batches
        for name, module in (("dcgan", dcgan), ("pix2pix", pix2pix), ("spade", spade), ("inpaint", painter),
                             ("inpaint_window", windowed)):
            timer = SyncedStepTimer()
            with tempfile.TemporaryDirectory() as tmp:
                trainer = L.Trainer(max_steps=args.steps + 1, **settings, logger=False, callbacks=[timer],
                                    enable_checkpointing=False, enable_progress_bar=False,
                                    enable_model_summary=False, default_root_dir=tmp, limit_val_batches=0,
                                    num_sanity_val_steps=0)
                trainer.fit(module, torch.utils.data.DataLoader(items, batch_size=bs))
            gaps = [g for epoch in timer.gaps for g in epoch]  # the first step (warm-up) has no gap
            result[f"{name}_train_images_per_s"] = round(bs / statistics.median(gaps), 2)
        result["inpaint_window_speedup"] = round(result["inpaint_window_train_images_per_s"]
                                                 / result["inpaint_train_images_per_s"], 2)
        n = 4 * bs
        brains = torch.stack([it["brain"] for it in items[:n]])
        start = time.perf_counter()
        labels = dcgan.sample(n, generator=torch.Generator().manual_seed(0))
        labels = torch.nn.functional.interpolate(labels[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0].long()
        with torch.no_grad():
            pix2pix.translate(labels * brains[:, 0].long(), brains)
        result["synthesis_pairs_per_s"] = round(n / (time.perf_counter() - start), 2)
        start = time.perf_counter()  # the same with SPADE as aug=gan_spade draws (its noise seeded)
        labels = dcgan.sample(n, generator=torch.Generator().manual_seed(0))
        labels = torch.nn.functional.interpolate(labels[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0].long()
        images = torch.stack([it["image"] for it in items[:n]])  # the real slices (aug=gan_spade: tissue classes)
        spade.translate(labels * brains[:, 0].long(), brains, generator=torch.Generator().manual_seed(0), image=images,
                        batch_stats=True)
        result["spade_synthesis_pairs_per_s"] = round(n / (time.perf_counter() - start), 2)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
