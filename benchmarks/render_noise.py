"""Render noise: how far two Cycles seeds of the same frames are apart, with and without post.translucency and
post.far_smoothing.

    python benchmarks/render_noise.py [--frames 6] [--resolution 128] [--seed 3]

Renders frames 0 .. N-1 of the default config (lesion forced present, the pattern evaluated per sample, so no
bake is needed) twice, with Cycles seeds 1 and 2, and finishes each render twice: as the pipeline does, and with
the Diffuse Direct pass set to zero, which makes the translucency add nothing (it spreads that pass). Prints ONE
JSON line: the mean absolute difference between the two seeds' 8-bit frames inside the scope's border (0-255),
per frame and averaged, with and without translucency; and, over the far lumen only (pixels past the middle of
`endoscope.far_smoothing_mm`, all frames pooled), the same with the config's far smoothing and with it off; and,
without far smoothing, the same by depth band (mm along the ray, all frames pooled): where the noise lies. The
frames, their draws and their masks are the same either way; only Cycles' sampling noise differs.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()

    from synthmed.render import compose_render
    from synthmed.render.config import resolve_config, sample_params
    from synthmed.render.post import finish_frame
    from synthmed.render.scene import ColonScene

    cfg = compose_render([f"render.resolution={args.resolution}", f"render.seed={args.seed}",
                          f"render.num_frames={args.frames}", "render.textures.mode=procedural"])
    cfg.overrides = {"lesion.present": 1}
    cfg = resolve_config(cfg)
    scene = ColonScene(cfg, threads=None)
    noise = {"with": [], "without": []}
    far_sum, far_pixels = {"on": 0.0, "off": 0.0}, 0
    no_smoothing = {**cfg, "endoscope": {**cfg["endoscope"], "far_smoothing_px": 0.0}}
    far_from = 0.5 * sum(float(v) for v in cfg["endoscope"]["far_smoothing_mm"])
    bands = (0, 30, 60, 90, 120, 150)  # mm: the last band is open
    band_sum, band_pixels = np.zeros(len(bands)), np.zeros(len(bands), np.int64)
    try:
        for index in range(args.frames):
            params = sample_params(cfg, index)
            renders = [scene.render(params, seed) for seed in (1, 2)]
            for name, off in (("with", False), ("without", True)):
                a, b = (finish_frame({**r, "diffuse": np.zeros_like(r["diffuse"])} if off else r, params, cfg)["image"]
                        for r in renders)
                inside = a.any(-1) | b.any(-1)
                noise[name].append(round(float(np.abs(a.astype(int) - b.astype(int))[inside].mean()), 3))
            far = inside & (renders[0]["depth"] > far_from) & (renders[0]["depth"] < 1e9)  # the border is the frame's
            for name, c in (("on", cfg), ("off", no_smoothing)):
                a, b = (finish_frame(r, params, c)["image"].astype(int) for r in renders)
                far_sum[name] += float(np.abs(a - b)[far].mean(-1).sum())
            far_pixels += int(far.sum())
            seen = inside & (renders[0]["depth"] < 1e9)
            band = np.digitize(renders[0]["depth"], bands) - 1
            np.add.at(band_sum, band[seen], np.abs(a - b).mean(-1)[seen])  # a, b: the last pair, unsmoothed
            np.add.at(band_pixels, band[seen], 1)
    finally:
        scene.close()
    print(json.dumps({"benchmark": "render_noise", "frames": args.frames, "resolution": args.resolution,
                      "seed": args.seed, "seed_difference_with_translucency": noise["with"],
                      "seed_difference_without_translucency": noise["without"],
                      "mean_with": round(float(np.mean(noise["with"])), 3),
                      "mean_without": round(float(np.mean(noise["without"])), 3), "far_from_mm": far_from,
                      "far_pixels": far_pixels,
                      "far_seed_difference_smoothed": round(far_sum["on"] / max(far_pixels, 1), 3),
                      "far_seed_difference_unsmoothed": round(far_sum["off"] / max(far_pixels, 1), 3),
                      "unsmoothed_seed_difference_by_depth_mm": {
                          f"{lo}-{hi}": round(float(band_sum[k] / band_pixels[k]), 3) if band_pixels[k] else None
                          for k, (lo, hi) in enumerate(zip(bands, [*bands[1:], "inf"], strict=True))},
                      "pixels_by_depth_mm": [int(v) for v in band_pixels]}))


if __name__ == "__main__":
    main()
