"""The vessel tree's cost (render/vessels.py): growing and rasterising each pattern lane, in numpy, once a
dataset in baked mode (in the bake, beside the Geometry Nodes pattern) and once a scene in procedural mode.

    python benchmarks/vessel_tree.py [--resolution 128] [--repeats 3]

Prints ONE JSON line: the texel grid, and per lane the seconds to grow the tree and to rasterise it (the least of
`--repeats` runs), its polylines and centreline samples, and the share of texels within a vessel's reach
(`vessels.NEAR_CELLS`)."""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from synthmed.render.config import compose_render, resolve_config
    from synthmed.render.vessels import NEAR_CELLS, grow, pattern_grid, rasterise

    cfg = resolve_config(compose_render([f"render.resolution={args.resolution}"]))
    rows, cols = pattern_grid(cfg)[:2]
    lanes = []
    for lane in range(int(cfg["textures"]["patterns"])):
        grow_s, raster_s = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            lines = grow(cfg, lane)
            t_grown = time.perf_counter()
            tree = rasterise(cfg, lane, lines)
            grow_s.append(t_grown - t)
            raster_s.append(time.perf_counter() - t_grown)
        lanes.append({"lane": lane, "grow_s": round(min(grow_s), 3), "rasterise_s": round(min(raster_s), 3),
                      "polylines": len(lines), "samples": int(sum(len(line) for line in lines)),
                      "near_share": round(float((tree[..., 0] < NEAR_CELLS).mean()), 4)})
    print(json.dumps({"resolution": args.resolution, "grid": [rows, cols], "lanes": lanes,
                      "total_s": round(sum(x["grow_s"] + x["rasterise_s"] for x in lanes), 3)}))


if __name__ == "__main__":
    main()
