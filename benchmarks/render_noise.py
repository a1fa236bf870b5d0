"""Render noise: how far two Cycles seeds of the same frames are apart, with and without post.translucency.

    python benchmarks/render_noise.py [--frames 6] [--resolution 128] [--seed 3]

Renders frames 0 .. N-1 of the default config (lesion forced present, the pattern evaluated per sample, so no
bake is needed) twice, with Cycles seeds 1 and 2, and finishes each render twice: as the pipeline does, and with
the Diffuse Direct pass set to zero, which makes the translucency add nothing (it spreads that pass). Prints ONE
JSON line: the mean absolute difference between the two seeds' 8-bit frames inside the scope's border (0-255),
per frame and averaged, with and without translucency. The frames, their draws and their masks are the same
either way; only Cycles' sampling noise differs.
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
    try:
        for index in range(args.frames):
            params = sample_params(cfg, index)
            renders = [scene.render(params, seed) for seed in (1, 2)]
            for name, off in (("with", False), ("without", True)):
                a, b = (finish_frame({**r, "diffuse": np.zeros_like(r["diffuse"])} if off else r, params, cfg)["image"]
                        for r in renders)
                inside = a.any(-1) | b.any(-1)
                noise[name].append(round(float(np.abs(a.astype(int) - b.astype(int))[inside].mean()), 3))
    finally:
        scene.close()
    print(json.dumps({"benchmark": "render_noise", "frames": args.frames, "resolution": args.resolution,
                      "seed": args.seed, "seed_difference_with_translucency": noise["with"],
                      "seed_difference_without_translucency": noise["without"],
                      "mean_with": round(float(np.mean(noise["with"])), 3),
                      "mean_without": round(float(np.mean(noise["without"])), 3)}))


if __name__ == "__main__":
    main()
