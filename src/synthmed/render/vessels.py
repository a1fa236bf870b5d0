"""The mucosa's vessel tree, grown in numpy (a node tree cannot grow one): trunks that wind over the wall and
branch into thinner and thinner vessels, each tapering as it goes and stopping where it meets another. The
tree is grown once a pattern lane on the unrolled reference cylinder of `pattern_grid` (rows around, columns
along, square texels) and rasterised into two channels the mucosa's material reads: the distance to
the nearest vessel's centreline (in main vessel cells, `lane_vessel_scale`) and that vessel's calibre (1: a
trunk at its root, down to `tree.min_calibre`). No bpy here: the bake, the per-sample shader and the tests
all read the same arrays.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping

import numpy as np
from scipy import ndimage

# ------------------------------------------------------------------------------ the pattern's texel grid
CHANNELS = 8  # a baked texel: mottle, main, calibre, patch (the first image), capillary, ripple, relief, tint (the second)


def texel_mm(cfg: Mapping) -> float:
    """The baked pattern's texel: `textures.texel_mm`, or (null) 0.4 mm at 128 px, finer for larger frames."""
    texel = cfg["textures"]["texel_mm"]
    return float(texel) if texel is not None else 0.4 * 128.0 / float(cfg["resolution"])


def pattern_grid(cfg: Mapping) -> tuple[int, int, float, float]:
    """Texels of one pattern: (rows, cols, radians a row, mm a column). Rows go around the reference circle
    plus one repeated row at each end (row r holds angle (r - 0.5) x step); columns along `length_mm`."""
    textures = cfg["textures"]
    texel = texel_mm(cfg)
    around = max(8, int(round(2.0 * math.pi * float(textures["reference_radius_mm"]) / texel)))
    cols = max(8, int(round(float(textures["length_mm"]) / texel)))
    return around + 2, cols, 2.0 * math.pi / around, float(textures["length_mm"]) / cols


def lane_vessel_scale(textures: Mapping, lane: int) -> float:
    """Vessel cells per mm (on the reference radius) of pattern `lane`: log-spaced over `vessel_scale`."""
    low, high = (float(v) for v in textures["vessel_scale"])
    count = int(textures["patterns"])
    return low * (high / low) ** (lane / (count - 1)) if count > 1 else math.sqrt(low * high)


# ------------------------------------------------------------------------------ the tree
NEAR_CELLS = 0.08  # `rasterise`: the distance is exact this near (main cells) a vessel's centreline, to within a
                   # texel beyond. The drawn half width (`params.vessels.width` x calibre, at least a texel: 0.08
                   # cells or less for every pattern at 128 px and finer) stays within it


def grow(cfg: Mapping, lane: int) -> list[np.ndarray]:
    """The tree of pattern `lane` as polylines, each an (n, 3) array of (axial mm, around mm, calibre): its
    centreline sampled every `tree.step` cells. Deterministic in (cfg, lane)."""
    textures = cfg["textures"]
    tree = textures["tree"]
    cell = 1.0 / lane_vessel_scale(textures, lane)  # mm
    around = 2.0 * math.pi * float(textures["reference_radius_mm"])
    length = float(textures["length_mm"])
    rng = np.random.default_rng([int(tree["seed"]), int(lane)])
    step = float(tree["step"]) * cell
    clearance = float(tree["clearance"]) * cell
    # occupancy: which vessel passes through each clearance-sized box (wrapping around the lumen)
    box_rows = max(1, int(around // clearance))
    box_cols = max(1, int(math.ceil(length / clearance)))
    owner = np.full((box_rows, box_cols), -1, np.int64)
    box_y, box_x = around / box_rows, length / box_cols
    # the heading turns at a rate that drifts (an Ornstein-Uhlenbeck walk): about `turn` radians over a cell,
    # the rate holding over about `bend_length` cells (winding, not jagged)
    bend_keep = math.exp(-step / (float(tree["bend_length"]) * cell))
    turn = float(tree["turn"]) * (step / cell) * math.sqrt(1.0 - bend_keep * bend_keep)
    taper = math.exp(-float(tree["taper"]) * step / cell)
    branch_p = step / (float(tree["branch_every"]) * cell)
    angle_low, angle_high = (math.radians(float(a)) for a in tree["branch_angle_deg"])
    child_low, child_high = (float(c) for c in tree["child_calibre"])
    min_calibre = float(tree["min_calibre"])
    free_steps = int(math.ceil(2.0 * clearance / step))  # a vessel leaving its parent may cross its boxes

    # trunks: seeds spread over the wall (jittered grid), each grows both ways from its seed
    spacing = float(tree["trunk_spacing"]) * cell
    heap: list = []
    count = 0
    for gy in np.arange(0.0, around, spacing):
        for gx in np.arange(0.0, length, spacing):
            y, x = gy + rng.uniform(0, spacing), gx + rng.uniform(0, spacing)
            heading = rng.uniform(0, 2 * math.pi)
            for side in (0.0, math.pi):
                heapq.heappush(heap, (-1.0, count, x, y, heading + side, 1.0, -1))
                count += 1
    lines: list[np.ndarray] = []
    while heap:
        _, ident, x, y, heading, calibre, parent = heapq.heappop(heap)
        points = [(x, y, calibre)]
        bend = 0.0
        for k in itertools.count():
            bend = bend * bend_keep + rng.normal(0.0, turn)
            heading += bend
            x, y = x + step * math.cos(heading), (y + step * math.sin(heading)) % around
            calibre *= taper
            if not 0.0 <= x < length or calibre < min_calibre:
                break
            box = (int(y / box_y) % box_rows, min(int(x / box_x), box_cols - 1))
            held = owner[box]
            if held not in (-1, ident) and (k >= free_steps or held != parent):
                points.append((x, y, calibre))  # it meets the other vessel: join it, then stop
                break
            owner[box] = ident
            points.append((x, y, calibre))
            if calibre * child_high >= min_calibre and rng.random() < branch_p:
                side = 1.0 if rng.random() < 0.5 else -1.0
                child = calibre * rng.uniform(child_low, child_high)
                heapq.heappush(heap, (-child, count, x, y, heading + side * rng.uniform(angle_low, angle_high),
                                      child, ident))
                count += 1
        if len(points) > 1:
            lines.append(np.asarray(points, np.float64))
    return lines


def rasterise(cfg: Mapping, lane: int, lines: list[np.ndarray]) -> np.ndarray:
    """(rows, cols, 2) float32 on `pattern_grid`: the distance from each texel's centre to the nearest point of
    the tree's centrelines, in main vessel cells, and that vessel's calibre there."""
    textures = cfg["textures"]
    rows, cols, row_theta, col_mm = pattern_grid(cfg)
    radius = float(textures["reference_radius_mm"])
    row_mm = row_theta * radius
    cell = 1.0 / lane_vessel_scale(textures, lane)
    core = rows - 2  # rows 1 .. rows - 2 hold angles (r - 0.5) x step; rows 0 and rows - 1 repeat the ends
    pad = int(math.ceil(float(cfg["shader"]["pattern_vessel_range"]) * cell / row_mm)) + 2
    # centreline samples under half a texel apart, to stand for the lines: every line's pieces, then its end as a
    # piece of no length; a piece from a to b gives n samples a + (b - a) k / n
    period = core * row_mm
    starts, ends, owner_of = [], [], []
    for number, line in enumerate(lines):
        step = line[1:] - line[:-1]
        step[:, 1] = _wrapped(step[:, 1], period)
        starts += [line[:-1], line[-1:]]
        ends += [line[:-1] + step, line[-1:]]
        owner_of.append(np.full(len(line), number))
    start = np.concatenate(starts) if starts else np.zeros((0, 3))
    end = np.concatenate(ends) if ends else np.zeros((0, 3))
    pieces = np.maximum(1, np.ceil(np.hypot(end[:, 0] - start[:, 0], end[:, 1] - start[:, 1])
                                   / (0.4 * min(row_mm, col_mm))).astype(int))
    piece = np.repeat(np.arange(len(start)), pieces)
    k = np.arange(len(piece)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    points = start[piece] + (end - start)[piece] * (k / pieces[piece])[:, None]
    owner = np.concatenate(owner_of)[piece] if owner_of else np.zeros(0, int)
    # each sample's step to the next and from the previous of its line (0 at a line's ends), across the wrap
    ahead = np.zeros((len(points), 2))
    ahead[:-1] = np.stack([np.diff(points[:, 0]), _wrapped(np.diff(points[:, 1]), period)], axis=1)
    ahead[np.append(owner[1:] != owner[:-1], True)] = 0.0
    behind = np.zeros_like(ahead)
    behind[1:] = -ahead[:-1]
    r = np.floor(np.mod(points[:, 1], core * row_mm) / row_mm).astype(int) + pad  # core row index + pad
    c = np.clip(np.floor(points[:, 0] / col_mm).astype(int), 0, cols - 1)
    height = core + 2 * pad
    centre_y = (np.arange(height) - pad + 0.5) * row_mm  # texel centres: core row k holds (k + 0.5) x step
    centre_x = (np.arange(cols) + 0.5) * col_mm
    # the samples on the padded grid: the wrap's padded rows repeat the other end of the circle
    copies = []
    for shift in (-core, 0, core):
        keep = np.flatnonzero((r + shift >= 0) & (r + shift < height))
        copies.append((r[keep] + shift, keep, np.mod(points[keep, 1], core * row_mm) + shift * row_mm))
    sr = np.concatenate([c_[0] for c_ in copies])
    index = np.concatenate([c_[1] for c_ in copies])
    sy = np.concatenate([c_[2] for c_ in copies])
    sc, sx, sw = c[index], points[index, 0], points[index, 2]
    if not len(index):
        return np.concatenate([np.full((rows, cols, 1), np.inf, np.float32), np.zeros((rows, cols, 1), np.float32)], -1)
    # samples in order of their texel, and of their distance from its centre; rank k: the texel's k-th
    key = sr * cols + sc
    order = np.lexsort((np.hypot(sx - centre_x[sc], sy - centre_y[sr]), key))
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    # far from the tree: the distance to the nearest seed texel's centre (to within a texel) ...
    seed = np.zeros((height, cols), bool)
    calibre = np.zeros((height, cols))
    first = order[rank == 0]
    seed[sr[first], sc[first]] = True
    calibre[sr[first], sc[first]] = sw[first]
    far, (ir, ic) = ndimage.distance_transform_edt(~seed, sampling=(row_mm, col_mm), return_indices=True)
    calibre_at = calibre[ir, ic]  # each texel's nearest vessel's calibre
    # ... near it (within `reach` texels of a sample, where a vessel's edge may lie): exact, the distance to the
    # centreline's pieces either side of each sample, one rank at a time (no texel twice in an assignment)
    reach = int(math.ceil(NEAR_CELLS * cell / min(row_mm, col_mm)))
    exact = np.full((height, cols), np.inf)
    for k in range(int(rank.max()) + 1):
        group = order[rank == k]
        gr, gc, gx, gy, gw, gi = sr[group], sc[group], sx[group], sy[group], sw[group], index[group]
        for dr in range(-reach, reach + 1):
            for dc in range(-reach, reach + 1):
                tr, tc = gr + dr, gc + dc
                inside = np.flatnonzero((tr >= 0) & (tr < height) & (tc >= 0) & (tc < cols))
                tr, tc = tr[inside], tc[inside]
                qx, qy = centre_x[tc] - gx[inside], centre_y[tr] - gy[inside]
                for step in (ahead[gi[inside]], behind[gi[inside]]):
                    length = np.maximum((step ** 2).sum(-1), 1e-12)
                    t = np.clip((qx * step[:, 0] + qy * step[:, 1]) / length, 0.0, 1.0)
                    d = np.hypot(qx - t * step[:, 0], qy - t * step[:, 1])
                    closer = d < exact[tr, tc]
                    exact[tr[closer], tc[closer]] = d[closer]
                    calibre_at[tr[closer], tc[closer]] = gw[inside][closer]
    # a texel with a centreline within `reach` texels has every sample that near inside the windows swept
    distance = np.where(exact <= reach * min(row_mm, col_mm), exact, far)
    out = np.stack([distance / cell, calibre_at], axis=-1)[pad - 1:pad + core + 1]  # core rows plus one each side
    return out.astype(np.float32)


def _wrapped(delta, period):
    return (np.asarray(delta) + period / 2.0) % period - period / 2.0


def vessel_tree(cfg: Mapping, lane: int) -> np.ndarray:
    """Pattern `lane`'s vessel tree on its texel grid: (rows, cols, 2) float32, distance (main cells) and
    calibre: `grow` then `rasterise`."""
    return rasterise(cfg, lane, grow(cfg, lane))


def tree_texels(cfg: Mapping, lane: int) -> np.ndarray:
    """`vessel_tree` as the textures store it: (rows, cols, 2) uint8, the distance over
    `shader.pattern_vessel_range` (1 beyond it) and the calibre, each x 255 rounded."""
    tree = vessel_tree(cfg, lane)
    tree[..., 0] /= float(cfg["shader"]["pattern_vessel_range"])
    return np.floor(np.clip(tree, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
