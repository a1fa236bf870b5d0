"""The vessel tree (render/vessels.py): grown in numpy, no bpy. Its polylines taper and branch into thinner
vessels; its raster holds the true distance to them and their calibre, wraps around the lumen, and is one
function of (config, pattern lane)."""

from __future__ import annotations

import numpy as np
import pytest

from synthmed.render.config import compose_render, resolve_config
from synthmed.render.vessels import (
    NEAR_CELLS,
    _nearest_piece,
    grow,
    lane_vessel_scale,
    pattern_grid,
    rasterise,
    tree_texels,
    vessel_tree,
)


@pytest.fixture(scope="module")
def cfg():
    # a shorter pattern than the default (the same cells, a quarter of the wall): quick, and every part is used
    return resolve_config(compose_render(["render.resolution=128", "render.textures.length_mm=110"]))


def test_vessels_taper_and_branch_into_thinner_ones(cfg):
    tree = cfg["textures"]["tree"]
    lines = grow(cfg, 0)
    assert len(lines) > 50
    calibres = [line[:, 2] for line in lines]
    # every vessel thins as it goes (never widens) and ends no thinner than min_calibre
    assert all(np.all(np.diff(c) <= 1e-12) for c in calibres)
    assert min(c.min() for c in calibres) >= tree["min_calibre"]
    trunks = [c for c in calibres if c[0] == 1.0]
    branches = [c for c in calibres if c[0] < 1.0]
    # trunks grow both ways from their seeds; branches start at most child_calibre[1] of a trunk's calibre
    assert len(trunks) >= 2 and len(branches) > len(trunks)
    assert max(c[0] for c in branches) <= tree["child_calibre"][1] + 1e-9
    # winding, not straight: the heading turns along a long vessel
    long = max(lines, key=len)
    heading = np.unwrap(np.arctan2(np.diff(long[:, 1]), np.diff(long[:, 0])))
    assert np.ptp(heading) > 0.3, np.ptp(heading)
    # the same (config, lane) grows the same tree; another lane another
    again = grow(cfg, 0)
    assert len(again) == len(lines) and all(np.array_equal(a, b) for a, b in zip(again, lines, strict=True))
    assert len(grow(cfg, 1)) != len(lines) or not np.array_equal(grow(cfg, 1)[0], lines[0])


def test_the_raster_holds_the_distance_to_the_tree_and_its_calibre(cfg):
    rows, cols, row_theta, col_mm = pattern_grid(cfg)
    radius = float(cfg["textures"]["reference_radius_mm"])
    row_mm, around = row_theta * radius, (rows - 2) * row_theta * radius
    cell = 1.0 / lane_vessel_scale(cfg["textures"], 0)
    lines = grow(cfg, 0)
    raster = rasterise(cfg, 0, lines)
    assert raster.shape == (rows, cols, 2) and raster.dtype == np.float32
    # against the brute-force distance from texel centres to every piece of the centrelines (around the seam too)
    starts, steps = [], []
    for line in lines:
        step = np.diff(line[:, :2], axis=0)
        step[:, 1] = (step[:, 1] + around / 2) % around - around / 2
        starts.append(line[:-1, :2])
        steps.append(step)
    starts, steps = np.concatenate(starts), np.concatenate(steps)
    rng = np.random.default_rng(0)
    picks = np.stack([rng.integers(0, rows, 1500), rng.integers(0, cols, 1500)], axis=1)
    y = (picks[:, 0] - 0.5) * row_mm  # row r holds angle (r - 0.5) x step
    x = (picks[:, 1] + 0.5) * col_mm
    qx = x[:, None] - starts[None, :, 0]
    qy = (y[:, None] - starts[None, :, 1] + around / 2) % around - around / 2
    t = np.clip((qx * steps[:, 0] + qy * steps[:, 1]) / np.maximum((steps ** 2).sum(-1), 1e-12), 0, 1)
    truth = np.hypot(qx - t * steps[:, 0], qy - t * steps[:, 1]).min(axis=1) / cell
    got = raster[picks[:, 0], picks[:, 1], 0]
    # near a vessel (where its edge is drawn) exact, to a hundredth of a texel; farther, within
    # the range the texture keeps (`shader.pattern_vessel_range`), to within a texel
    texel = max(row_mm, col_mm) / cell
    near, kept = truth < NEAR_CELLS, truth < float(cfg["shader"]["pattern_vessel_range"])
    assert near.sum() > 100 and kept.sum() > 300
    assert np.abs(got - truth)[near].max() < 0.02 * texel, np.abs(got - truth)[near].max() / texel
    assert np.abs(got - truth)[kept].max() < 0.75 * texel, np.abs(got - truth)[kept].max() / texel
    # on a vessel: the texel's calibre is one of the tree's; off every vessel far away, the distance is large
    on = raster[..., 0] < 0.2 * col_mm / cell
    assert on.mean() > 0.01 and raster[..., 1][on].min() >= cfg["textures"]["tree"]["min_calibre"]
    # the repeated rows at each end hold the other end of the circle: no seam
    for end, other in ((0, rows - 2), (rows - 1, 1)):  # (the calibre of either end of the nearest piece)
        a, b = raster[end], raster[other]
        near = a[:, 0] < NEAR_CELLS
        assert np.allclose(a[near, 0], b[near, 0], atol=1e-5) and np.abs(a[:, 0] - b[:, 0]).max() < 0.75 * texel
        assert np.allclose(a[near, 1], b[near, 1], atol=0.01)


def test_the_texture_is_the_raster_in_eight_bits(cfg):
    raster = vessel_tree(cfg, 2)
    texels = tree_texels(cfg, 2)
    top = float(cfg["shader"]["pattern_vessel_range"])
    assert texels.dtype == np.uint8 and texels.shape == raster.shape
    assert np.abs(texels[..., 0] / 255.0 * top - np.minimum(raster[..., 0], top)).max() <= 0.5 / 255 * top + 1e-6
    assert np.abs(texels[..., 1] / 255.0 - raster[..., 1]).max() <= 0.5 / 255 + 1e-6


def test_the_nearest_piece_is_exact_where_many_pieces_crowd_a_point():
    # 400 pieces crossing a 10 x 10 mm patch of a 30 mm circumference (some across the wrap), with their calibres:
    # a point there has dozens of pieces about as near, so the first 8 midpoints cannot settle it and it asks again
    rng = np.random.default_rng(3)
    period = 30.0
    start = np.column_stack([rng.uniform(5, 15, 400), rng.uniform(-5, 5, 400) % period, rng.uniform(0.2, 1, 400)])
    step = np.column_stack([rng.uniform(-2, 2, (400, 2)), rng.uniform(-0.1, 0, 400)])
    step[::7] = 0.0  # pieces of no length (a line's end) among them
    end = start + step
    query = np.column_stack([rng.uniform(4, 16, 3000), rng.uniform(-6, 6, 3000)])
    got, calibre = _nearest_piece(start, end, query, period, chunk=1000)
    qx = query[:, None, 0] - start[None, :, 0]
    qy = (query[:, None, 1] - start[None, :, 1] + period / 2) % period - period / 2
    t = np.clip((qx * step[:, 0] + qy * step[:, 1]) / np.maximum((step[:, :2] ** 2).sum(-1), 1e-12), 0, 1)
    d = np.hypot(qx - t * step[:, 0], qy - t * step[:, 1])
    j = d.argmin(axis=1)
    at = np.arange(len(query))
    assert np.allclose(got, d[at, j], atol=1e-9)
    assert np.allclose(calibre, start[j, 2] + t[at, j] * step[j, 2], atol=1e-9)


def test_a_pattern_without_vessels_rasterises_to_no_vessel(cfg):
    raster = rasterise(cfg, 0, [])
    assert raster.shape == (*pattern_grid(cfg)[:2], 2)
    assert np.isinf(raster[..., 0]).all() and not raster[..., 1].any()
