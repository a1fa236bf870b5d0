"""Render throughput: the synthmed.render pipeline vs the naive way, on the same N frames, in one run.

    python benchmarks/render_throughput.py [--frames 8] [--resolution 128] [--workers 2]
    python benchmarks/render_throughput.py --mode sequence [--frames 64] [--length 16]

--mode sequence: the pipeline only (render.mode=sequence: one scene per sequence, the camera moving, with depth,
normals, flow and poses written per frame; --frames a multiple of --length); the naive renderer has no sequences.

pipeline: render_dataset (spawned workers, scene built once per worker, the mucosa pattern baked once per
          dataset, one render per frame giving RGB + object-index mask, sidecars, manifest).
naive:    per frame, a new scene built from scratch with the mucosa pattern evaluated per sample (the same
          texture nodes as shader nodes: a script that rebuilds its scene every frame has no use for a bake)
          and its vessel tree grown anew (numpy, in the RGB render's stage: the first render poses the scene),
          one full-quality render for the RGB and a second full-quality render for the mask; PNGs + manifest
          (one process, all threads).
Prints ONE JSON line: both frames/s, their ratio, the naive frame's seconds by stage (scene build, RGB render,
mask render), how far the two renderers' frames are apart (masks identical? mean and 99th percentile of the
absolute RGB difference, 0-255), the main process's peak RSS (MiB) at the start and end of the pipeline run,
and the render workers' RSS over the first and the last tenth of the frames (flat memory over a long run:
`--frames 2000 --skip-naive`).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _children_rss_mib() -> float:
    """Resident memory of this process's child processes (the render workers), from /proc."""
    me, total = str(os.getpid()), 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if fields[1] == me:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024.0
        except (OSError, IndexError):
            continue
    return total


class RssTrack(threading.Thread):
    """Samples the workers' total RSS against the number of frames finished, every `interval` seconds."""

    def __init__(self, frames_dir: Path, interval: float) -> None:
        super().__init__(daemon=True)
        self.frames_dir, self.interval, self.samples = frames_dir, interval, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            done = len(os.listdir(self.frames_dir)) if self.frames_dir.is_dir() else 0
            rss = _children_rss_mib()
            if rss > 0:
                self.samples.append((done, rss))

    def summary(self, frames: int) -> dict:
        """Workers' RSS over the first, the middle and the last tenth of the frames: flat memory means equal figures."""
        s = [(d, r) for d, r in self.samples if d > 0]
        if len(s) < 4:
            return {}
        early = [r for d, r in s if d <= frames * 0.1] or [s[0][1]]
        late = [r for d, r in s if d >= frames * 0.9] or [s[-1][1]]
        middle = [r for d, r in s if frames * 0.45 <= d <= frames * 0.55] or [s[len(s) // 2][1]]  # still growing?
        return {"workers_rss_mib_first_10pct": round(max(early), 1), "workers_rss_mib_middle_10pct": round(max(middle), 1),
                "workers_rss_mib_last_10pct": round(max(late), 1),
                "workers_rss_mib_max": round(max(r for _, r in s), 1), "rss_samples": len(s)}


def naive(overrides: list[str], out: str, queue) -> None:
    """Runs in its own spawned process (bpy is never imported in the benchmark's main process)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # Blender's per-render "Saved: ..." lines: stdout carries only the JSON line
    os.close(devnull)
    from synthmed.render.config import compose_render, frame_seed, resolve_config, sample_params
    from synthmed.render.post import finish_frame, write_png
    from synthmed.render.scene import ColonScene

    c = resolve_config(compose_render([*overrides, "render.textures.mode=procedural"]))
    out_p = Path(out)
    rows = []
    stages = {"build": 0.0, "render_rgb": 0.0, "render_mask": 0.0}
    t0 = time.perf_counter()
    for i in range(c["num_frames"]):
        t = time.perf_counter()
        scene = ColonScene(c, threads=os.cpu_count())  # from scratch, every frame
        t_built = time.perf_counter()
        p, seed = sample_params(c, i), frame_seed(c["seed"], i)
        rgb = scene.render(p, seed)
        t_rgb = time.perf_counter()
        mask_pass = scene.render(p, seed)  # the second full-quality render, for the mask
        t_mask = time.perf_counter()
        stages["build"] += t_built - t
        stages["render_rgb"] += t_rgb - t_built
        stages["render_mask"] += t_mask - t_rgb
        f = finish_frame({**rgb, "index": mask_pass["index"]}, p, c)
        write_png(out_p / "images" / f"{i:06d}.png", f["image"])
        write_png(out_p / "masks" / f"{i:06d}.png", f["mask"])
        rows.append({"id": f"{i:06d}", "seed": seed, "label": f["label"], "visible_pixels": f["visible_pixels"], **p})
        scene.close()
    with (out_p / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    queue.put((time.perf_counter() - t0, {k: v / c["num_frames"] for k, v in stages.items()}))


def agreement(a: Path, b: Path, frames: int) -> dict:
    """How far two renders of the same frames are apart: masks byte-equal, RGB absolute difference."""
    import numpy as np
    from PIL import Image

    diffs, masks_equal = [], True
    for i in range(frames):
        name = f"{i:06d}.png"
        masks_equal &= (a / "masks" / name).read_bytes() == (b / "masks" / name).read_bytes()
        diffs.append(np.abs(np.asarray(Image.open(a / "images" / name), np.int16)
                            - np.asarray(Image.open(b / "images" / name), np.int16)).ravel())
    d = np.concatenate(diffs)
    return {"masks_identical": bool(masks_equal), "rgb_abs_diff_mean": round(float(d.mean()), 3),
            "rgb_abs_diff_p99": float(np.percentile(d, 99)), "rgb_abs_diff_max": int(d.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--mode", choices=("still", "sequence"), default="still")
    ap.add_argument("--length", type=int, default=16, help="frames per sequence (--mode sequence)")
    ap.add_argument("--rss-interval", type=float, default=2.0, help="seconds between samples of the workers' RSS")
    args = ap.parse_args()

    from synthmed.render import compose_render, render_dataset

    # the real config (experiment=colon_render, scale=paper) with the benchmark's sizes
    overrides = [f"render.num_frames={args.frames}", f"render.resolution={args.resolution}", "render.seed=0",
                 f"render.workers={args.workers}"]
    if args.mode == "sequence":
        overrides += ["render.mode=sequence", f"render.sequence.length={args.length}"]
    tmp = Path(tempfile.mkdtemp(prefix="render_bench_"))
    try:
        rss_start = _rss_mib("VmHWM")
        track = RssTrack(tmp / "pipeline" / "frames", args.rss_interval)
        track.start()
        t0 = time.perf_counter()
        render_dataset(compose_render(overrides), tmp / "pipeline", progress=False)
        t_pipe = time.perf_counter() - t0
        track.stop.set()
        rss_end = _rss_mib("VmHWM")
        workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        # steady state (what a long run converges to): frames finished after each worker's first one,
        # over the time between the first and the last sidecar (excludes process start + scene build)
        stamps = sorted(f.stat().st_mtime for f in (tmp / "pipeline" / "frames").glob("*.json"))
        steady = (len(stamps) - args.workers) / (stamps[-1] - stamps[args.workers - 1]) \
            if len(stamps) > args.workers and stamps[-1] > stamps[args.workers - 1] else None
        result = {
            "benchmark": "render_throughput", "mode": args.mode, "frames": args.frames, "resolution": args.resolution,
            **({"sequence_length": args.length} if args.mode == "sequence" else {}),
            "workers": args.workers, "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "pipeline_fps": round(args.frames / t_pipe, 3), "pipeline_s": round(t_pipe, 2),
            "pipeline_fps_steady": None if steady is None else round(steady, 3),
            "main_peak_rss_mib_start": round(rss_start, 1), "main_peak_rss_mib_end": round(rss_end, 1),
            "worker_peak_rss_mib": round(workers_peak, 1), **track.summary(args.frames),
        }
        if not args.skip_naive and args.mode == "still":
            (tmp / "naive" / "images").mkdir(parents=True)
            (tmp / "naive" / "masks").mkdir(parents=True)
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            proc = ctx.Process(target=naive, args=([*overrides, "render.workers=1"], str(tmp / "naive"), q))
            proc.start()
            t_naive, stages = q.get()
            proc.join()
            result.update({"naive_fps": round(args.frames / t_naive, 3), "naive_s": round(t_naive, 2),
                           # seconds a frame: the naive frame is a scene build + two renders that evaluate
                           # the mucosa pattern per sample (+ PNGs), the pipeline's one render that looks it up
                           **{f"naive_{k}_s_per_frame": round(v, 4) for k, v in stages.items()},
                           "ratio": round(t_naive / t_pipe, 2),
                           "ratio_steady": None if steady is None else round(steady * t_naive / args.frames, 2),
                           "naive_vs_pipeline": agreement(tmp / "pipeline", tmp / "naive", args.frames)})
        print(json.dumps(result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
