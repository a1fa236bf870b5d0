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
from scipy.spatial import cKDTree

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
    normal, uniform = _stream(rng.standard_normal), _stream(rng.random)  # draws in blocks: quicker than one by one
    lines: list[np.ndarray] = []
    while heap:
        _, ident, x, y, heading, calibre, parent = heapq.heappop(heap)
        points = [(x, y, calibre)]
        bend = 0.0
        for k in itertools.count():
            bend = bend * bend_keep + turn * normal()
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
            if calibre * child_high >= min_calibre and uniform() < branch_p:
                side = 1.0 if uniform() < 0.5 else -1.0
                child = calibre * (child_low + (child_high - child_low) * uniform())
                angle = angle_low + (angle_high - angle_low) * uniform()
                heapq.heappush(heap, (-child, count, x, y, heading + side * angle, child, ident))
                count += 1
        if len(points) > 1:
            lines.append(np.asarray(points, np.float64))
    return lines


def _stream(draw, block: int = 4096):
    """A function returning the next of `draw`'s numbers, drawn `block` at a time."""
    buffer: list[float] = []

    def take() -> float:
        if not buffer:
            buffer.extend(draw(block).tolist()[::-1])
        return buffer.pop()
    return take


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
    # the centrelines' pieces: from each point of a line to the next, and its end as a piece of no length; and
    # samples under half a texel apart along them (a piece from a to b gives n samples a + (b - a) k / n), to mark
    # the texels the lines pass through
    period = core * row_mm
    start = np.concatenate(lines) if lines else np.zeros((0, 3))
    step = np.diff(start, axis=0, append=start[-1:])
    step[:, 1] = _wrapped(step[:, 1], period)
    step[np.cumsum([len(line) for line in lines], dtype=int) - 1] = 0.0  # a line's end: a piece of no length
    end = start + step
    pieces = np.maximum(1, np.ceil(np.hypot(end[:, 0] - start[:, 0], end[:, 1] - start[:, 1])
                                   / (0.4 * min(row_mm, col_mm))).astype(int))
    piece = np.repeat(np.arange(len(start)), pieces)
    k = np.arange(len(piece)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    points = start[piece] + (end - start)[piece] * (k / pieces[piece])[:, None]
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
    # far from the tree: the distance to the nearest seed texel (one a centreline passes through) from each texel's
    # centre, to within a texel; a seed texel keeps the calibre of its sample nearest its centre
    key = sr * cols + sc
    order = np.lexsort((np.hypot(sx - centre_x[sc], sy - centre_y[sr]), key))
    ordered = key[order]
    first = order[np.r_[True, ordered[1:] != ordered[:-1]]]
    seed = np.zeros((height, cols), bool)
    calibre = np.zeros((height, cols))
    seed[sr[first], sc[first]] = True
    calibre[sr[first], sc[first]] = sw[first]
    far, (ir, ic) = ndimage.distance_transform_edt(~seed, sampling=(row_mm, col_mm), return_indices=True)
    calibre_at = calibre[ir, ic]  # each texel's nearest vessel's calibre
    # near it (within `NEAR_CELLS`, rounded up to whole texels: where a vessel's edge may lie), exact: the distance
    # to the nearest piece, and the calibre there. The seed texel nearest a texel is at most a texel's diagonal
    # farther than its nearest centreline point, so every texel that near is among those asked
    limit = math.ceil(NEAR_CELLS * cell / min(row_mm, col_mm)) * min(row_mm, col_mm)
    near = np.flatnonzero(far.ravel() <= limit + math.hypot(row_mm, col_mm))
    exact, nearest_calibre = _nearest_piece(start, end, np.stack([centre_x[near % cols], centre_y[near // cols]], 1),
                                            period)
    distance = far.ravel().copy()
    close = exact <= limit
    distance[near[close]] = exact[close]
    calibre_at = calibre_at.ravel()
    calibre_at[near] = nearest_calibre
    out = np.stack([distance.reshape(height, cols) / cell, calibre_at.reshape(height, cols)], axis=-1)
    return out[pad - 1:pad + core + 1].astype(np.float32)  # core rows plus one each side


def _nearest_piece(start: np.ndarray, end: np.ndarray, query: np.ndarray, period: float, chunk: int = 65536):
    """For each (axial, around) mm point of `query`: the distance to the nearest centreline piece (`start` to
    `end`, rows of (axial, around, calibre); around wraps at `period`) and the calibre there. A periodic KD-tree
    of the pieces' midpoints offers the k nearest; a piece whose midpoint is farther than the best distance plus
    the longest half piece cannot be nearer, and a point whose k-th midpoint is not that far asks again with 2k."""
    step = end[:, :2] - start[:, :2]
    middle = start[:, :2] + 0.5 * step
    half = 0.5 * float(np.hypot(step[:, 0], step[:, 1]).max())
    span = 4.0 * (float(max(middle[:, 0].max(), query[:, 0].max())) + 1.0)  # no wrap along the lumen
    index = cKDTree(np.stack([middle[:, 0], np.mod(middle[:, 1], period)], 1), boxsize=(span, period))
    where = np.stack([query[:, 0], np.mod(query[:, 1], period)], 1)
    best = np.full(len(query), np.inf)
    best_calibre = np.zeros(len(query))
    todo, k = np.arange(len(query)), 8
    while len(todo):
        again = []
        for lo in range(0, len(todo), chunk):
            rows = todo[lo:lo + chunk]
            reach, pick = index.query(where[rows], k=min(k, len(middle)))
            reach, pick = reach.reshape(len(rows), -1), pick.reshape(len(rows), -1)
            qx = query[rows, 0:1] - start[pick, 0]
            qy = _wrapped(query[rows, 1:2] - start[pick, 1], period)
            sx, sy = step[pick, 0], step[pick, 1]
            t = np.clip((qx * sx + qy * sy) / np.maximum(sx * sx + sy * sy, 1e-12), 0.0, 1.0)
            d = np.hypot(qx - t * sx, qy - t * sy)
            j = np.argmin(d, axis=1)
            at = np.arange(len(rows))
            best[rows] = d[at, j]
            best_calibre[rows] = start[pick[at, j], 2] + t[at, j] * (end[pick[at, j], 2] - start[pick[at, j], 2])
            if k < len(middle):
                again.append(rows[reach[:, -1] <= best[rows] + half])
        todo = np.concatenate(again) if again else np.zeros(0, int)
        k *= 2
    return best, best_calibre


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
