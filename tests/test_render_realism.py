"""Lesion variety, hard negatives and optics (issue: frames that teach what real lesions look like).

Blender renders run in their own interpreter (bpy is never imported in the test process); the optics and
colour rules are numpy and are tested here directly."""

from __future__ import annotations

import colorsys
import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from synthmed.render import compose_render
from synthmed.render.config import LESION_TYPES, resolve_config, sample_params
from synthmed.render.lesions import lesion_colour
from synthmed.render.post import (
    LUMA,
    border_mask,
    dim_reddening,
    enhance,
    fill_light,
    finish_frame,
    highlights,
    line_kernel,
    optics,
    processor,
    translucency,
)

HAS_BPY = importlib.util.find_spec("bpy") is not None


@pytest.fixture(scope="module")
def cfg():
    return resolve_config(compose_render(["render.resolution=64"]))


@pytest.fixture(scope="module")
def varied():
    return resolve_config(compose_render(["render.resolution=64", "render=varied"]))


def test_lesion_colour_is_the_mucosas_moved_paler_or_redder(cfg):
    p = {**sample_params(cfg, 0), "lesion.hue_jitter": 0.0}
    mucosa = (p["mucosa.hue"], p["mucosa.saturation"], p["mucosa.value"])
    same = lesion_colour({**p, "lesion.redness": 0.0}, cfg["shader"])
    assert same == pytest.approx(mucosa)
    pale = lesion_colour({**p, "lesion.redness": -1.0}, cfg["shader"])
    red = lesion_colour({**p, "lesion.redness": 1.0}, cfg["shader"])
    assert pale[1] < mucosa[1] < red[1]  # saturation
    assert pale[2] > mucosa[2] > red[2]  # value

    def greenness(hsv):  # green over red of the RGB colour (0 for a fully saturated red; red is never 0 here)
        r, g, _ = colorsys.hsv_to_rgb(hsv[0] % 1.0, *hsv[1:])
        return g / r

    assert greenness(pale) > greenness(mucosa) > greenness(red)


def test_varied_lesions_span_paler_to_redder_and_every_paris_class(varied, cfg):
    draws = [sample_params(varied, i) for i in range(400)]
    lesions = [d for d in draws if d["lesion.present"]]
    assert {d["lesion.type"] for d in lesions} == set(LESION_TYPES)
    assert {d["lesion.surface"] for d in lesions} == {"smooth", "pits", "villous", "vascular"}
    redness = np.array([d["lesion.redness"] for d in lesions])
    assert (redness < -0.3).mean() > 0.2 and (np.abs(redness) < 0.3).mean() > 0.2 and (redness > 0.3).mean() > 0.2
    # hard negatives are drawn independently of the label: as often in lesion frames as in normal ones
    for key in ("clutter.bubbles", "clutter.debris", "clutter.fluid", "clutter.red_patch", "optics.motion_blur"):
        with_lesion = np.mean([d[key] for d in draws if d["lesion.present"]])
        without = np.mean([d[key] for d in draws if not d["lesion.present"]])
        assert abs(with_lesion - without) < 0.12, key
    assert all(d["lesion.depression"] > 0 for d in lesions if d["lesion.type"] == "depressed")
    assert all(d["lesion.depression"] == 0 for d in lesions if d["lesion.type"] != "depressed")
    # the default keeps the study's look: raised lesions redder than the mucosa (a third of them only a little:
    # nearer the wall's pink), stippled (version 19), nodular (version 20), no clutter, no blur
    plain = [sample_params(cfg, i) for i in range(200)]
    assert {d["lesion.type"] for d in plain} == {"sessile", "pedunculated", "flat_elevated"}
    redness = np.array([d["lesion.redness"] for d in plain])
    assert redness.min() >= 0.2 and 0.25 < (redness < 0.5).mean() < 0.5
    assert min(d["lesion.stipple"] for d in plain) >= 0.5
    assert min(d["lesion.nodules"] for d in plain) >= 0.3
    assert not any(d[k] for d in plain for k in ("clutter.bubbles", "clutter.debris", "optics.motion_blur"))


def _frame(size=64, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.uniform(0.0, 0.6, (size, size, 3)).astype(np.float32)
    rgb[20:24, 30:34] = 4.0  # a specular highlight
    index = np.zeros((size, size), np.float32)
    index[40:50, 10:20] = 1.0
    albedo = np.full((size, size, 3), (0.5, 0.25, 0.2), np.float32)
    return {"rgb": rgb, "albedo": albedo, "diffuse": np.full((size, size, 3), 0.4, np.float32), "index": index,
            "depth": np.full((size, size), 30.0, np.float32), "derived": {}}


def test_fill_light_is_the_head_on_light_scaled_by_fill_and_falls_off_with_distance(cfg):
    """The fill light: `light.fill` x the irradiance of a surface facing the tip light (Cycles' point light:
    P / (4 pi d^2), a diffuse surface's radiance albedo x E / pi), from the lens distance, no nearer than
    `fill_min_distance_mm`; none where no surface is seen; tinted as the light is."""
    endo = cfg["endoscope"]
    p = {"light.power_w": 40.0, "light.fill": 0.1, "light.warmth": 0.0}
    albedo = np.full((1, 4, 3), 0.5, np.float32)
    depth = np.array([[10.0, 20.0, 1e10, 2.0]], np.float32)
    out = fill_light(albedo, depth, p, endo, (1.0, 1.0, 1.0))
    head_on = 0.5 * 0.1 * 40.0 * float(endo["light_power_scale"]) / (4.0 * np.pi ** 2)
    assert out[0, 0] == pytest.approx(np.full(3, head_on / 100.0), rel=1e-5)
    assert out[0, 1] == pytest.approx(out[0, 0] / 4.0, rel=1e-5)  # 1 / d^2
    assert not out[0, 2].any()  # no surface: no light
    nearest = float(endo["fill_min_distance_mm"])
    assert out[0, 3] == pytest.approx(np.full(3, head_on / nearest ** 2), rel=1e-5)
    assert not fill_light(albedo, depth, {**p, "light.fill": 0.0}, endo, (1.0, 1.0, 1.0)).any()
    warm = fill_light(albedo, depth, p, endo, (1.0, 0.97, 0.9))
    assert warm[0, 0, 2] == pytest.approx(0.9 * out[0, 0, 2], rel=1e-5)
    # in a frame, a shadow (no direct light) is dark, not black, and keeps the albedo's hue
    q = {**sample_params(cfg, 0), "endoscope.border": "circle", "endoscope.border_radius": 1.0, "light.warmth": 0.0,
         "endoscope.vignette": 0.0, "endoscope.exposure_ev": 0.0, "optics.glare": 0.0, "optics.defocus": 0,
         "optics.motion_blur": 0}
    frame = _frame()
    frame["rgb"][:32] = 0.0  # the upper half in shadow
    lit = finish_frame(frame, {**q, "light.fill": 0.1}, cfg)["image"][28, 28].astype(int)
    assert lit.min() > 0 and lit[0] > lit[1] > lit[2]  # red albedo: red > green > blue
    assert not finish_frame(frame, {**q, "light.fill": 0.0}, cfg)["image"][28, 28].any()


def test_translucency_softens_shadow_edges_red_farthest_and_never_across_a_depth_step():
    """post.translucency spreads the diffuse light over the surface (a sigma of radius x focal / distance pixels per
    channel) and returns albedo x (spread - light): uniform light gets nothing, a shadow's edge gets light from its
    lit side, red reaching farthest; light never spreads to a surface at another distance; no surface, no light."""
    size, focal, radius = 64, 40.0, (1.0, 0.35, 0.2)
    albedo = np.full((size, size, 3), (0.8, 0.5, 0.4), np.float32)
    light = np.zeros((size, size, 3), np.float32)
    light[:, :32] = 1.0  # the left half lit, the right half in shadow
    depth = np.full((size, size), 10.0, np.float32)  # red sigma 4 px, blue 0.8 px
    flat = translucency(np.ones_like(light), albedo, depth, focal, radius, 1.3)
    assert np.abs(flat).max() < 1e-5
    added = translucency(light, albedo, depth, focal, radius, 1.3)
    row = added[32]
    assert (row[32:] >= -1e-6).all() and (row[:32] <= 1e-6).all()  # the shadow gains what the lit side loses
    assert row[32, 0] > 0.2 * 0.8 and row[32, 2] > 0.2 * 0.4  # next to the edge: a large share of its light
    reach = (row[32:] / albedo[0, 0]).sum(0)  # light carried into the shadow, per channel
    assert reach[0] > 2.0 * reach[1] > 2.0 * 1.2 * reach[2], reach
    assert abs(float(added[:, :, 0].sum())) < 1e-3 * float((light * albedo)[:, :, 0].sum())  # none made or lost
    assert row[40, 2] < 1e-4 < row[40, 0]  # 8 px in: blue has stopped, red still arrives
    # the lit half is a near fold (10 mm), the shadow the wall behind it (40 mm): nothing crosses
    step = depth.copy()
    step[:, 32:] = 40.0
    assert not translucency(light, albedo, step, focal, radius, 1.3)[:, 32:].any()
    # no surface (depth 1e10) and Cycles' NaN where the albedo is 0: nothing added, no NaN
    nan = light.copy()
    nan[0, 0] = np.nan
    sky = depth.copy()
    sky[:, 48:] = 1e10
    out = translucency(nan, albedo, sky, focal, radius, 1.3)
    assert np.isfinite(out).all() and not out[:, 48:].any()


def test_optics_blur_the_image_only(cfg):
    p = {**sample_params(cfg, 0), "endoscope.border": "circle", "endoscope.border_radius": 1.0,
         "endoscope.vignette": 0.0, "endoscope.exposure_ev": 0.0}
    sharp = {**p, "optics.glare": 0.0, "optics.defocus": 0, "optics.motion_blur": 0}
    frame = _frame()

    def energy(img):  # high-frequency energy: blur lowers it
        return float(np.abs(np.diff(img.astype(np.float32), axis=1)).mean())

    base = finish_frame(frame, sharp, cfg)
    for change in ({"optics.defocus": 1, "optics.defocus_sigma": 0.01},
                   {"optics.motion_blur": 1, "optics.motion_blur_length": 0.05, "optics.motion_blur_angle_deg": 30.0}):
        blurred = finish_frame(frame, {**sharp, **change}, cfg)
        assert energy(blurred["image"]) < 0.7 * energy(base["image"]), change
        assert np.array_equal(blurred["mask"], base["mask"])  # the mask stays the geometry's
        assert blurred["label"] == base["label"] and blurred["visible_pixels"] == base["visible_pixels"]
        again = finish_frame(frame, {**sharp, **change}, cfg)
        assert np.array_equal(again["image"], blurred["image"])  # deterministic
    # glare adds light around the highlight and nowhere far from it
    no_halo = {**cfg["endoscope"], "lens_halo": 0.0}  # the halo has its own test
    glared = optics(frame["rgb"], {**sharp, "optics.glare": 1.0}, no_halo)
    added = glared - frame["rgb"]
    assert added.min() >= 0.0
    assert added[22, 24:30].mean() > 0.05 and added[0:5, 0:5].max() < 1e-3


def test_structure_enhancement_sharpens_luma_only_and_leaves_no_rim(cfg):
    """post.enhance: the luma's detail finer than a gaussian, x amount, added to R, G and B alike: a flat field
    inside a black border is unchanged (no rim), an edge overshoots on both sides, chroma is kept, a glint gets
    a darker ring; amount 0 is the identity. In a frame, the mask stays the geometry's."""
    size = 64
    inside = border_mask(size, "circle", 1.0, 0.2)
    flat = np.where(inside[..., None], np.float32([0.7, 0.45, 0.35]), np.float32(0.0))
    assert np.abs(enhance(flat, inside, 1.5, 2.0) - flat).max() < 1e-5  # the black surround leaves no rim
    assert np.array_equal(enhance(flat, inside, 0.0, 2.0), flat)
    edge = flat.copy()
    edge[:, 32:] *= np.float32(0.5)  # a darker right half: a fold's shadow
    out = enhance(edge, inside, 1.0, 2.0)
    row, before = out[32], edge[32]
    assert row[31, 0] > before[31, 0] + 0.03 and row[32, 0] < before[32, 0] - 0.03  # overshoot both sides
    assert np.abs(row[5:27] - before[5:27]).max() < 0.02  # far from the edge: unchanged
    added = out - edge
    assert np.abs(added[..., 0] - added[..., 1]).max() < 1e-5 and np.abs(added[..., 1] - added[..., 2]).max() < 1e-5
    glint = flat.copy()
    glint[30:33, 30:33] = 1.0
    ringed = enhance(glint, inside, 1.0, 2.0)
    assert (ringed[30:33, 30:33] >= glint[30:33, 30:33] - 1e-6).all()
    assert ringed[31, 35, 1] < glint[31, 35, 1] - 0.01 and ringed[35, 31, 1] < glint[35, 31, 1] - 0.01
    # in a frame: sharper (more detail), the same mask, deterministic
    p = {**sample_params(cfg, 0), "endoscope.border": "circle", "endoscope.border_radius": 1.0,
         "endoscope.vignette": 0.0, "endoscope.exposure_ev": 0.0, "optics.glare": 0.0, "optics.defocus": 0,
         "optics.motion_blur": 0}
    frame = _frame()
    soft, sharp = (finish_frame(frame, {**p, "endoscope.enhance": a}, cfg) for a in (0.0, 1.5))
    detail = [float(np.abs(np.diff(f["image"].astype(np.float32), axis=1)).mean()) for f in (soft, sharp)]
    assert detail[1] > 1.1 * detail[0], detail
    assert np.array_equal(soft["mask"], sharp["mask"]) and soft["label"] == sharp["label"]
    assert np.array_equal(finish_frame(frame, {**p, "endoscope.enhance": 1.5}, cfg)["image"], sharp["image"])


def test_lens_halo_widens_a_strong_glint_and_keeps_the_light(cfg):
    """The lens's halo: a glint tens of times over full scale (a specular peak) stays over full scale a pixel
    around its core, a weak one does not, a flat wall is unchanged, no light is made or lost; 0 is off."""
    endo = cfg["endoscope"]
    p = {"optics.glare": 0.0, "optics.defocus": 0, "optics.motion_blur": 0}
    assert 0.0 < float(endo["lens_halo"]) < 1.0
    wall = np.full((128, 128, 3), 0.3, np.float32)
    frame = wall.copy()
    frame[40, 40] = 40.0  # a specular peak in one pixel
    frame[90, 90] = 1.2  # a faint highlight
    out = optics(frame, p, endo)
    assert all(out[40 + dy, 40 + dx].min() > 1.0 for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # white 3 px across
    assert out[36, 40].max() < 0.35  # and not far from it
    assert (out[89:92, 89:92] < 1.0).all() and out[90, 90].max() < 1.2  # the faint one softens, no more
    assert out[10:30, 10:30] == pytest.approx(wall[10:30, 10:30], abs=1e-5)  # a flat wall is unchanged
    assert float(out.sum()) == pytest.approx(float(frame.sum()), rel=1e-5)  # spread, not made
    # the halo is a fraction of the frame's width: the same glint at twice the size (2 x 2 pixels) covers
    # about four times the pixels
    big = np.full((256, 256, 3), 0.3, np.float32)
    big[80:82, 80:82] = 40.0
    white = int((optics(big, p, endo)[..., 0] > 1.0).sum())
    assert 3 * int((out[..., 0] > 1.0).sum()) <= white <= 5 * int((out[..., 0] > 1.0).sum())
    assert np.array_equal(optics(frame, p, {**endo, "lens_halo": 0.0}), frame)


def test_processor_regulates_brightness_and_lifts_shadows_keeping_hue(cfg):
    endo = {**cfg["endoscope"], "black_level": 0.0}  # the curve alone; the black level has its own test
    frame = _frame()["rgb"]
    inside = np.ones(frame.shape[:2], bool)
    out = processor(frame, inside, endo)
    lum = out @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    k, target = float(endo["tone_lift"]), float(endo["exposure_target"])
    # the percentile lands on the tone curve's image of the target
    assert np.percentile(lum, endo["exposure_percentile"]) == pytest.approx((1 + k) * target / (1 + k * target), rel=1e-3)
    # the light control: the same scene lit 2x brighter or dimmer comes out the same (within the gain limit)
    for factor in (0.5, 2.0):
        assert np.allclose(processor(frame * factor, inside, endo), out, rtol=1e-4, atol=1e-6)
    # hue and saturation kept: each pixel's RGB is scaled, so channel ratios are unchanged
    dark = frame[5, 5]
    assert (out[5, 5] / out[5, 5].sum()) == pytest.approx(dark / dark.sum(), rel=1e-4)
    # shadows lifted more than highlights: the curve's gain falls with luminance
    gain = out.sum(-1) / frame.sum(-1)
    lum_in = frame @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    assert gain[lum_in < np.percentile(lum_in, 10)].mean() > 1.2 * gain[lum_in > np.percentile(lum_in, 90)].mean()
    # k = 0 is a plain gain; an all-black frame stays black (no division by zero)
    flat = processor(frame, inside, {**endo, "tone_lift": 0.0})
    assert np.allclose(flat / frame, (flat / frame)[0, 0], rtol=1e-4)
    assert not processor(np.zeros_like(frame), inside, endo).any()


def test_black_level_takes_the_pedestal_off_the_curve_keeping_hue(cfg):
    weights = np.array([0.2126, 0.7152, 0.0722], np.float32)
    frame = _frame()["rgb"]
    frame[:, :8] *= np.linspace(0.0, 0.1, 64, dtype=np.float32)[:, None, None]  # a far lumen fading to black
    inside = np.ones(frame.shape[:2], bool)
    b = float(cfg["endoscope"]["black_level"])
    assert 0.0 < b < 0.1  # the default is on, and small
    curve = processor(frame, inside, {**cfg["endoscope"], "black_level": 0.0})
    out = processor(frame, inside, cfg["endoscope"])
    y, y_b = curve @ weights, out @ weights
    # the curve's output below the pedestal goes black; above it, y -> (y - b) / (1 - b)
    dark = y <= b
    assert dark.any() and (~dark).any()
    assert not out[dark].any()
    assert y_b[~dark] == pytest.approx((y[~dark] - b) / (1 - b), rel=1e-4, abs=1e-6)
    # full scale stays full scale (1 -> 1), and nothing under it gets brighter
    assert ((y_b <= y + 1e-6) | (y > 1.0)).all()
    # hue and saturation kept where the pixel is not black
    lit = np.argwhere(~dark)[0]
    px, ref = out[tuple(lit)], curve[tuple(lit)]
    assert (px / px.sum()) == pytest.approx(ref / ref.sum(), rel=1e-4)
    # the darker the pixel, the more of it goes: the pedestal is taken off, not a gain
    assert (y_b / np.maximum(y, 1e-9))[~dark].min() < 0.5 < (y_b / np.maximum(y, 1e-9))[y > 0.5].min()
    # an all-black frame stays black
    assert not processor(np.zeros_like(frame), inside, cfg["endoscope"]).any()


def test_dim_reddening_deepens_the_dim_walls_red_keeping_luminance(cfg):
    """`post.dim_reddening`: a pixel n e-folds under the reference luminance (capped at `most`) loses
    strength x n of ln(G / R) and of ln(B / R) alike, exactly; its luminance is kept; pixels at or over the
    reference, pixels that see no surface and strength 0 leave the frame as it is."""
    rng = np.random.default_rng(0)
    size = 32
    lum = np.exp(np.linspace(np.log(0.9), np.log(1e-4), size * size, dtype=np.float32)).reshape(size, size)
    colour = np.array([0.7, 0.35, 0.25], np.float32)
    lin = lum[..., None] * colour / float(colour @ LUMA) * rng.uniform(0.9, 1.1, (size, size, 3)).astype(np.float32)
    depth = np.full((size, size), 50.0, np.float32)
    depth[:2] = 1e10  # no surface there
    strength, reference, most = 0.2, 0.42, 2.0
    out = dim_reddening(lin, depth, strength, reference, most)
    assert out.dtype == np.float32 and out.shape == lin.shape
    before = lin @ LUMA
    assert np.allclose(out @ LUMA, before, rtol=1e-4, atol=1e-9)  # only the colour moves
    bright = before >= reference
    assert bright.sum() > 10 and np.array_equal(out[bright], lin[bright])
    assert np.array_equal(out[:2], lin[:2])
    n = np.clip(np.log(reference / before), 0.0, most)
    for channel in (1, 2):
        shift = np.log(out[..., channel] / out[..., 0]) - np.log(lin[..., channel] / lin[..., 0])
        assert np.allclose(shift[2:], -strength * n[2:], atol=1e-4), np.abs(shift + strength * n)[2:].max()
        assert shift[2:].min() == pytest.approx(-strength * most, abs=1e-4)  # capped: the near-black not crimson
    assert dim_reddening(lin, depth, 0.0, reference, most) is lin
    frame = {"rgb": lin, "albedo": np.full_like(lin, 0.3), "diffuse": np.zeros_like(lin), "depth": depth,
             "index": np.zeros((size, size), np.float32)}
    params = {**sample_params(cfg, 0), "endoscope.enhance": 0.0}
    off = {**cfg, "endoscope": {**cfg["endoscope"], "dim_reddening": 0.0}}
    on_img, off_img = (finish_frame(frame, params, c)["image"].astype(np.int16) for c in (cfg, off))
    redder = (on_img[..., 1] - on_img[..., 0]) - (off_img[..., 1] - off_img[..., 0])
    assert (redder <= 1).all() and (redder < -2).sum() > 50  # the whole frame: G falls against R, never rises


def test_highlights_turn_over_lit_colour_pale_keeping_luminance(cfg):
    """post.highlights, the processor's highlight chroma suppression: a colour whose largest channel passes the
    knee is drawn toward the grey of its luminance, so no channel clips alone: over-lit red goes pale pink, not
    saturated red. Luminance and the channels' order are kept, the largest channel stays under full scale (a
    pixel brighter than full scale in luminance goes white); below the knee nothing changes; knee 1 is off."""
    knee = float(cfg["endoscope"]["highlight_knee"])
    assert 0.5 < knee < 1.0  # on by default
    red = np.array([0.5, 0.08, 0.05], np.float32)  # a red wall's colour
    lin = red * np.geomspace(0.5, 8.0, 40, dtype=np.float32)[:, None]  # ever brighter
    lin = np.concatenate([lin, [[3.0, 3.0, 3.0], [0.2, 0.9, 0.1]]]).astype(np.float32)[None]
    out = highlights(lin, knee)
    assert out.dtype == np.float32 and out.shape == lin.shape
    below = lin.max(-1) <= knee
    assert below.any() and np.array_equal(out[below], lin[below])  # under the knee: untouched
    lum_in, lum_out = lin @ LUMA, out @ LUMA
    kept = lum_in < 0.95
    assert lum_out[kept] == pytest.approx(lum_in[kept], rel=1e-5)  # luminance kept
    over = lum_in >= 1.0  # brighter than full scale in luminance: grey at its luminance (white once encoded)
    assert over.any() and np.allclose(out[over], lum_in[over][:, None])
    assert (out[~over].max(-1) < 1.0).all()  # under it, no channel at full scale
    assert np.allclose(out[0, 40], 3.0)  # white stays white
    assert (out[0, :40, 0] >= out[0, :40, 1]).all() and (out[0, :40, 1] >= out[0, :40, 2]).all()  # R >= G >= B: its hue
    saturation = (out.max(-1) - out.min(-1)) / np.maximum(out.max(-1), 1e-6)
    assert saturation[0, 0] == pytest.approx(0.9, rel=1e-4)  # dim red: as it was
    assert np.all(np.diff(saturation[0, :40][~below[0, :40]]) <= 1e-6)  # the brighter, the paler
    assert saturation[0, 39] < 0.3  # 8x over-lit red: pale pink
    # clipped channels (what the knee at 1 leaves): saturated red at full scale, and the green pixel
    clipped = np.clip(highlights(lin, 1.0), 0.0, 1.0)
    assert np.array_equal(highlights(lin, 1.0), lin)
    assert ((clipped[0, :40, 0] >= 1.0) & (clipped[0, :40, 1] < 0.5)).sum() > 10
    # through the whole finish: an over-lit red frame keeps little of its pure red at full scale (what is left is
    # dark red of low luminance whose red lands just under full scale), and its brightest pixels turn pale
    frame = _frame()
    frame["rgb"] = (frame["rgb"] * np.array([1.0, 0.2, 0.12], np.float32) * 4.0).astype(np.float32)
    p = {"endoscope.border": "circle", "endoscope.border_radius": 1.0, "endoscope.vignette": 0.0,
         "endoscope.exposure_ev": 1.0, "endoscope.enhance": 0.0, "light.warmth": 0.0, "light.power_w": 40.0,
         "light.fill": 0.0, "camera.fov_deg": 140.0, "optics.glare": 0.0, "optics.defocus": 0, "optics.motion_blur": 0}
    images = {k: finish_frame(frame, p, {**cfg, "endoscope": {**cfg["endoscope"], "highlight_knee": k}})["image"]
              for k in (knee, 1.0)}
    pure = {k: int(((im[..., 0] == 255) & (im[..., 1] < 128)).sum()) for k, im in images.items()}
    assert pure[1.0] > 100 and 10 * pure[knee] < pure[1.0], pure  # 678 and 22
    bright = {k: im[images[1.0][..., 0] == 255].astype(np.float32) for k, im in images.items()}
    assert bright[knee][:, 1].mean() > bright[1.0][:, 1].mean() + 40, {k: b.mean(0) for k, b in bright.items()}


def test_motion_kernel_is_a_normalised_streak():
    k = line_kernel(7.0, 0.0)
    assert k.sum() == pytest.approx(1.0)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    c = k.shape[0] // 2
    assert k[c].sum() == pytest.approx(1.0)  # horizontal: only the middle row
    v = line_kernel(7.0, 90.0)
    assert v[:, c].sum() == pytest.approx(1.0)


SCRIPT = textwrap.dedent("""
    import json, math, sys
    import numpy as np
    from synthmed.render.config import compose_render, resolve_config, sample_params, LESION_TYPES
    from synthmed.render.lumen import PLAIN_RINGS
    from synthmed.render.post import finish_frame
    from synthmed.render.scene import ColonScene

    cfg = resolve_config(compose_render(["render.resolution=64", "render.samples=2", "render.textures.mode=procedural"]))
    scene = ColonScene(cfg, threads=2)
    # a straight lumen, the lens on its axis looking down it, nothing but what each case adds
    base = {**sample_params(cfg, 3),
            "tube.bend_amplitude_mm": 0.0, "tube.bend_amplitude2_mm": 0.0, "tube.radius_variation": 0.0,
            "tube.wall_noise_mm": 0.0, "tube.radius_mm": 18.0, "tube.fold_spacing_mm": 30.0, "tube.fold_phase": 0.0,
            "tube.fold_depth": 0.3, "tube.fold_sharpness": 7.0, "tube.fold_partial": 0.0, **PLAIN_RINGS,
            "camera.axial_mm": 100.0, "camera.offset": 0.0, "camera.yaw_deg": 0.0, "camera.pitch_deg": 0.0,
            "camera.roll_deg": 0.0, "camera.fov_deg": 140.0, "light.power_w": 40.0,
            "endoscope.exposure_ev": 0.0, "endoscope.border": "circle", "endoscope.border_radius": 1.0,
            "optics.glare": 0.0, "optics.defocus": 0, "optics.motion_blur": 0,
            "endoscope.enhance": 0.0,  # the processor rings what is bright (test_structure_enhancement...)
            "clutter.bubbles": 0, "clutter.debris": 0, "clutter.fluid": 0, "clutter.red_patch": 0,
            "lesion.present": 0, "lesion.placement": "view", "lesion.view_offaxis": 0.5, "lesion.view_azimuth_deg": 270.0,
            "lesion.tilt_deg": 0.0, "lesion.behind_fold": 0, "lesion.mucus": 0, "lesion.hue_jitter": 0.0}
    out = {}

    def shot(name, **change):
        p = {**base, **{k.replace("__", "."): v for k, v in change.items()}}
        r = scene.render(p, 1)
        f = finish_frame(r, p, cfg)
        out[name] = {"label": f["label"], "visible": f["visible_pixels"], "derived": r["derived"]}
        return f

    empty = shot("empty")
    for kind, height, depression in (("pedunculated", 9.0, 0.0), ("sessile", 4.0, 0.0), ("flat_elevated", 1.6, 0.0),
                                     ("flat", 0.8, 0.0), ("depressed", 1.6, 0.45)):
        f = shot(kind, lesion__present=1, lesion__type=kind, lesion__size_mm=10.0, lesion__height_mm=height,
                 lesion__depression=depression, lesion__redness=0.0)
        m = f["mask"] > 0
        out[kind]["changed_inside"] = float(np.abs(f["image"].astype(int) - empty["image"].astype(int))[m].mean()) if m.any() else 0.0
    # multi-lobed: the same sessile lesion creased into lobes
    for name, lobes in (("smooth_dome", 0.0), ("lobed_dome", 0.12)):
        f = shot(name, lesion__present=1, lesion__type="sessile", lesion__size_mm=10.0, lesion__height_mm=4.0,
                 lesion__redness=0.0, lesion__lobes=lobes, lesion__lobe_cells=2.5, lesion__lobulation=0.0)
        out[name]["image"] = f["image"].astype(int).tolist()
        out[name]["mask"] = (f["mask"] > 0).tolist()
    colours = {}
    for name, redness in (("pale", -1.0), ("same", 0.0), ("red", 1.0)):
        f = shot(name, lesion__present=1, lesion__type="sessile", lesion__size_mm=10.0, lesion__height_mm=4.0,
                 lesion__redness=redness, lesion__texture_strength=0.0, lesion__surface="smooth")
        px = f["image"][f["mask"] > 0].astype(float)
        colours[name] = float(px[:, 0].mean() / max(px[:, 1].mean(), 1.0))
    out["redness_ratio"] = colours
    # the albedo pass of a red lesion: its foot (the mask's outline) fades into the wall's colour, its top keeps
    # the lesion's; the wall around it is the wall's
    from scipy import ndimage
    p = {**base, "lesion.present": 1, "lesion.type": "sessile", "lesion.size_mm": 10.0, "lesion.height_mm": 4.0,
         "lesion.redness": 1.0, "lesion.texture_strength": 0.0, "lesion.surface": "smooth"}
    r = scene.render(p, 1)
    m = np.rint(r["index"]) == 1
    inner = ndimage.binary_erosion(m, iterations=2)
    wall = ndimage.binary_dilation(m, iterations=3) & ~m & (r["depth"] < 1e9)
    albedo = np.asarray(r["albedo"])
    out["albedo_red_over_green"] = {k: float(albedo[v][:, 0].mean() / albedo[v][:, 1].mean())
                                    for k, v in (("foot", m & ~inner), ("top", inner), ("wall", wall))}
    # the Diffuse Direct pass (post.translucency spreads it): albedo x it is the diffuse share of the Combined pass
    seen = r["depth"] < 1e9
    out["diffuse_share"] = ((albedo * np.nan_to_num(r["diffuse"]))[seen].sum(0) / r["rgb"][seen].sum(0)).tolist()
    for name, change in (("bubbles", {"clutter__bubbles": 1, "clutter__bubble_offaxis": 0.4}),
                         ("debris", {"clutter__debris": 1, "clutter__debris_offaxis": 0.85, "clutter__debris_size_mm": 6.0,
                                     "clutter__debris_count": 6, "clutter__debris_spread_mm": 5.0}),
                         ("fluid", {"clutter__fluid": 1, "clutter__fluid_level": 0.4, "clutter__fluid_opacity": 0.8}),
                         ("red_patch", {"clutter__red_patch": 1, "clutter__red_patch_ahead_mm": 25.0,
                                        "clutter__red_patch_angle_deg": 270.0, "clutter__red_patch_size_mm": 20.0,
                                        "clutter__red_patch_redness": 1.0})):
        f = shot(name, **change)
        diff = (f["image"].astype(int) - empty["image"].astype(int)).sum(-1)
        out[name]["changed_pixels"] = int((np.abs(diff) > 30).sum())
        out[name]["brighter_share"] = float((diff > 30).sum() / max(1, (np.abs(diff) > 30).sum()))
        out[name]["mask_pixels"] = int((f["mask"] > 0).sum())
    # behind a fold: the lesion moves to just beyond the next ridge (ridges at k x 30 mm)
    p = {**base, "lesion.present": 1, "lesion.type": "sessile", "lesion.size_mm": 8.0, "lesion.height_mm": 3.0,
         "lesion.behind_fold": 1, "lesion.fold_gap": 0.2}
    scene.pose(p)
    out["behind_fold_z"] = float(scene.lesions.objects["sessile"].matrix_world.translation.z)
    # close-ups: the scope moved up and turned toward that wall; turned nearly onto it, it is moved back
    for name, change in (("lumen_view", {}),
                         ("wall_view", {"camera.view": "wall", "camera.offset": 0.6, "camera.offset_angle_deg": 90.0,
                                        "camera.toward_wall_deg": 50.0}),
                         ("wall_too_close", {"camera.view": "wall", "camera.offset": 0.75,
                                             "camera.offset_angle_deg": 90.0, "camera.toward_wall_deg": 88.0})):
        p = {**base, **change}
        r = scene.render(p, 1)
        d = np.asarray(r["depth"])
        c = d.shape[0] // 2
        out[name] = {"centre_depth": float(d[c - 1:c + 1, c - 1:c + 1].min()),
                     "median_depth": float(np.median(d[d < 1e9])), "offset_mm": float(r["derived"]["camera.offset_mm"])}
    # a sequence turned nearly onto the wall keeps the wall ahead out of the near clip too
    from synthmed.render.sequence import camera_path
    poses = camera_path({**base, "camera.view": "wall", "camera.offset": 0.75, "camera.offset_angle_deg": 90.0,
                         "camera.toward_wall_deg": 88.0}, cfg, 4, scene.ray_cast, seed=0)
    out["sequence_ahead_mm"] = [float(scene.ray_cast(pose.position, pose.forward)[2]) for pose in poses]
    # a tall lesion straight ahead of a close-up would hold the lens: not placed; a flat one is
    wall = {"camera.view": "wall", "camera.offset": 0.6, "camera.offset_angle_deg": 90.0, "camera.toward_wall_deg": 50.0,
            "lesion.present": 1, "lesion.view_offaxis": 0.0, "lesion.tilt_deg": 0.0}
    for name, kind, height in (("tall_close", "pedunculated", 16.0), ("flat_close", "flat", 0.8)):
        r = scene.render({**base, **wall, "lesion.type": kind, "lesion.height_mm": height, "lesion.size_mm": 10.0}, 1)
        out[name] = {"placed": r["derived"]["lesion.placed"], "distance": r["derived"]["lesion.distance_mm"]}
    scene.close()
    print(json.dumps(out))
""")


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_rendered_variety_and_hard_negatives():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["empty"]["label"] == 0 and out["empty"]["visible"] == 0
    for kind in LESION_TYPES:  # every Paris class renders, in the mask, and changes the pixels it covers
        assert out[kind]["label"] == 1, (kind, out[kind])
        assert out[kind]["changed_inside"] > 2.0, (kind, out[kind])
    # lobes crease the dome: its pixels change, while the outline (mask) stays nearly the same
    smooth, lobed = out["smooth_dome"], out["lobed_dome"]
    m = np.array(smooth["mask"]) & np.array(lobed["mask"])
    assert lobed["label"] == 1 and m.sum() > 0.7 * np.array(smooth["mask"]).sum(), (smooth["visible"], lobed["visible"])
    assert np.abs(np.array(lobed["image"]) - np.array(smooth["image"]))[m].mean() > 3.0
    assert min(out["sequence_ahead_mm"]) >= 0.9 * 6.0, out["sequence_ahead_mm"]
    # a lens that would sit inside a tall lesion gets none; a flat one on the same wall is placed
    assert out["tall_close"]["placed"] == 0 and out["tall_close"]["distance"] == -1.0, out["tall_close"]
    assert out["flat_close"]["placed"] == 1 and out["flat_close"]["distance"] > 0, out["flat_close"]
    # same colour as the mucosa's sits between paler and redder
    r = out["redness_ratio"]
    assert r["pale"] < r["same"] < r["red"], r
    a = out["albedo_red_over_green"]
    assert a["wall"] < a["foot"] < a["top"], a
    share = out["diffuse_share"]  # the wet coat's glints are the rest: white, so most of the blue
    assert 0.5 < share[0] <= 1.001 and all(0.1 < v <= 1.001 for v in share), share
    for name in ("bubbles", "debris", "fluid", "red_patch"):  # hard negatives change the image, never the mask
        assert out[name]["changed_pixels"] > 10, (name, out[name])  # of 64 x 64, seen obliquely on the wall
        assert out[name]["mask_pixels"] == 0 and out[name]["label"] == 0, (name, out[name])
    assert out["bubbles"]["derived"]["clutter.bubbles_placed"] > 0
    # a bubble lightens what it covers (a lit film at its rim, the light's glint), never a black ring
    assert out["bubbles"]["brighter_share"] > 0.7, out["bubbles"]
    assert out["debris"]["derived"]["clutter.debris_placed"] > 0
    # the view ray lands at some z; the next ridge beyond it is at a multiple of 30 mm, the lesion 0.2 x 30 past it
    z = out["behind_fold_z"]
    assert (z % 30.0) == pytest.approx(6.0, abs=1.5), z
    # a wall view sees the near wall (half the lumen view's depth at most), never nearer than
    # scene.min_view_distance_mm (6) straight ahead: a scope turned nearly onto the wall is moved back
    lumen, wall, close = out["lumen_view"], out["wall_view"], out["wall_too_close"]
    assert wall["median_depth"] < 0.5 * lumen["median_depth"], (wall, lumen)
    assert wall["offset_mm"] == pytest.approx(0.6 * 18.0, abs=1.0), wall  # far enough already: where it was put
    assert close["offset_mm"] < 0.75 * 18.0 - 1.0 and close["centre_depth"] >= 0.9 * 6.0, close


def test_the_light_is_kept_inside_the_lumen():
    """A scope beside a wall, its light 3 mm above the lens: moved toward the centreline until the light is at
    least 1 mm inside (a light in the wall rendered a black frame); a light pointing away from the wall leaves
    the pose alone."""
    from synthmed.render.camera import keep_wall_away

    def wall_at_y5(origin, direction):  # the plane y = 5, seen from below
        if direction[1] <= 0:
            return None
        distance = (5.0 - origin[1]) / direction[1]
        return (origin + direction * distance, np.array([0.0, -1.0, 0.0]), float(distance))

    centre, away = np.zeros(3), np.array([0.0, 1.0, 0.0])
    offset = keep_wall_away(centre, away, 4.0, np.array([0.0, 1.0, 0.0]), wall_at_y5, 3.0 + 1.0)  # scope_pose's
    assert offset == pytest.approx(4.0 * 0.6 ** 3)  # 4 -> 2.4 -> 1.44 -> 0.864
    assert 5.0 - (offset + 3.0) >= 1.0
    assert keep_wall_away(centre, away, 4.0, np.array([1.0, 0.0, 0.0]), wall_at_y5, 3.0 + 1.0) == 4.0
    # through the scope's pose: 2 mm off the centreline toward the wall (clearance 3), rolled so that the light
    # (3 mm above the lens) points at the wall: moved back until the light is 1 mm inside; not rolled, left alone
    from synthmed.render.camera import scope_pose

    params = {"camera.offset_angle_deg": 270.0, "camera.offset": 0.1, "tube.radius_mm": 20.0,
              "camera.toward_wall_deg": 0.0, "camera.yaw_deg": 0.0, "camera.pitch_deg": 0.0}
    scene = {"min_wall_clearance_mm": 3.0, "min_view_distance_mm": 6.0}
    axes = (np.zeros(3), np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))  # centre, tangent, side
    rolled = scope_pose({**params, "camera.roll_deg": 180.0}, scene, *axes, wall_at_y5, light_offset_mm=3.0)
    position, up = rolled[0], rolled[2]
    assert up == pytest.approx([0.0, 1.0, 0.0]) and rolled[4] == pytest.approx(2.0 * 0.6 ** 2)  # 2 -> 1.2 -> 0.72
    assert 5.0 - (position[1] + 3.0) >= 1.0
    assert scope_pose({**params, "camera.roll_deg": 0.0}, scene, *axes, wall_at_y5, light_offset_mm=3.0)[4] == 2.0
    assert scope_pose({**params, "camera.roll_deg": 180.0}, scene, *axes, wall_at_y5)[4] == 2.0  # no light: no check


WET_SCRIPT = textwrap.dedent("""
    import json
    import sys
    import numpy as np
    from synthmed.render.config import compose_render, resolve_config, sample_params
    from synthmed.render.scene import ColonScene

    cfg = resolve_config(compose_render(["render.resolution=64", "render.samples=4", "render.textures.mode=procedural",
                                         *sys.argv[3:]]))
    scene = ColonScene(cfg, threads=2)
    # close to the wall (1 mm grooves span pixels), nothing in front of it
    params = {**sample_params(cfg, 5), "camera.view": "wall", "camera.offset": 0.6, "camera.toward_wall_deg": 60.0,
              "lesion.present": 0, "clutter.bubbles": 0, "clutter.debris": 0, "clutter.fluid": 0,
              "optics.motion_blur": 0, "optics.defocus": 0, "mucosa.wetness": 1.0, "mucosa.coat_roughness": 0.03,
              **json.loads(sys.argv[2])}
    r = scene.render(params, 1)
    np.savez(sys.argv[1], rgb=r["rgb"], albedo=r["albedo"], depth=r["depth"], index=r["index"],
             texels_per_mm=scene.mucosa.pattern_inputs(params)["capillary.texels_per_mm"])
""")


def _wet_render(out, *overrides: str, params: dict | None = None) -> dict:
    """WET_SCRIPT's frame, with config `overrides` and frame `params` over its own. The grooves are drawn at their
    own width (`shader.groove_pixel_width=0`: at 64 px they are under a pixel, and the tests of their lines look
    at the lines) unless `overrides` set the pixel filter."""
    if not any(o.startswith("render.shader.groove_pixel_width=") for o in overrides):
        overrides = ("render.shader.groove_pixel_width=0", *overrides)
    proc = subprocess.run([sys.executable, "-c", WET_SCRIPT, str(out), json.dumps(params or {}), *overrides],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_grooves_darken_thin_lines_and_the_ripple_moves_only_the_glints(tmp_path):
    """The tissue's fine grooves (`shader.groove_*`) darken the wall's colour along thin lines, never brighten
    it, and sink the normal along them; the wet film's ripple (`shader.coat_ripple_gain`) tilts the coat only:
    the geometry stays, the glints move."""
    both = _wet_render(tmp_path / "both.npz")
    tinted = _wet_render(tmp_path / "tinted.npz", "render.shader.groove_strength=0")  # the colour only
    plain = _wet_render(tmp_path / "plain.npz", "render.shader.groove_strength=0", "render.shader.groove_darkening=0")
    calm = _wet_render(tmp_path / "calm.npz", "render.shader.coat_ripple_gain=0")
    wall = both["depth"] < 1e9
    assert wall.mean() > 0.5
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    darker = (plain["albedo"] - tinted["albedo"]) @ luma  # toward the mucosa's dark colour
    assert darker[wall].min() > -1e-6, darker[wall].min()  # grooves only darken
    lines = darker > 1e-3
    assert 0.03 < lines[wall].mean() < 0.5, lines[wall].mean()  # thin lines: neither nothing nor a tint
    sunk = np.abs(both["rgb"] - tinted["rgb"]).max(axis=-1)  # the grooves' normal shades them
    assert (sunk[wall] > 0.01).mean() > 0.01, (sunk[wall] > 0.01).mean()
    assert np.array_equal(calm["depth"], both["depth"])
    moved = np.abs(calm["rgb"] - both["rgb"]).max(axis=-1)
    assert moved.max() > 1.0 and (moved[wall] > 0.003).mean() > 0.01, (moved.max(), (moved[wall] > 0.003).mean())


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_grain_is_drawn_per_frame_and_vessels_thin_where_they_fade(tmp_path):
    """`params.mucosa.grain` scales the grooves per frame (0: a smooth wall, exactly as with the shader's gains
    at 0); `shader.vessel_taper` < 1 thins the vessels where they fade out, so it only takes vessel colour away."""
    net = ("render.params.vessels.density=0.6", "render.params.vessels.contrast=0.85")
    smooth = _wet_render(tmp_path / "smooth.npz", "render.params.mucosa.grain=0", *net)
    plain = _wet_render(tmp_path / "plain.npz", "render.shader.groove_strength=0", "render.shader.groove_darkening=0",
                        *net)
    assert np.allclose(smooth["albedo"], plain["albedo"], rtol=0.0, atol=1e-6)
    assert np.abs(smooth["rgb"] - plain["rgb"]).max() < 1e-4
    deep = _wet_render(tmp_path / "deep.npz", "render.params.mucosa.grain=1.5", *net)
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    grooves = ((plain["albedo"] - deep["albedo"]) @ luma > 1e-3).mean()  # grooves where grain > 0 (0.25)
    assert grooves > 0.1, grooves
    even = _wet_render(tmp_path / "even.npz", "render.shader.vessel_taper=1.0", "render.params.mucosa.grain=0", *net)
    lighter = (smooth["albedo"] - even["albedo"]) @ luma  # vessels are darker than the wall: thinner ones, lighter
    wall = plain["depth"] < 1e9
    assert lighter[wall].min() > -1e-6, lighter[wall].min()
    # 0.04 of the wall (the vessel tree of version 23 covers less of it than version 22's net: 0.14)
    assert (lighter[wall] > 1e-3).mean() > 0.02, (lighter[wall] > 1e-3).mean()


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_the_grooves_relief_is_deep_in_places_and_faint_in_others(tmp_path):
    """`shader.grain_patch_*`: a slow noise scales the grooves' relief across the wall by 1 - c .. 1 + c (mean about
    1), so where the even wall's grooves shade the image, the patched wall's shade it far less in places and more
    in others; their colour is left alone (with the relief off, the patches change no pixel)."""
    tinted, tinted_patched = (_wet_render(tmp_path / f"tinted{c}.npz", "render.params.mucosa.grain=1.5",
                                          "render.shader.groove_strength=0", f"render.shader.grain_patch_contrast={c}")
                              for c in (0, 1))
    assert np.array_equal(tinted["rgb"], tinted_patched["rgb"])
    grain = ("render.params.mucosa.grain=1.5", "render.params.vessels.density=0", "render.shader.groove_darkening=0")
    flat = _wet_render(tmp_path / "flat.npz", "render.shader.groove_strength=0", *grain)
    even = _wet_render(tmp_path / "even.npz", "render.shader.grain_patch_contrast=0", *grain)
    patched = _wet_render(tmp_path / "patched.npz", "render.shader.grain_patch_contrast=1", *grain)
    wall = flat["depth"] < 1e9
    shade_even, shade_patched = (np.abs(r["rgb"] - flat["rgb"]).max(axis=-1) for r in (even, patched))
    grooves = wall & (shade_even > 0.01)
    assert grooves.mean() > 0.01, grooves.mean()
    ratio = shade_patched[grooves] / shade_even[grooves]
    faint, deep = (ratio < 0.5).mean(), (ratio > 1.5).mean()
    assert faint > 0.1 and deep > 0.1, (faint, deep)  # 0.35 and 0.27 of the 31% of the wall the grooves shade


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_grooves_under_a_pixel_are_drawn_wider_and_fainter(tmp_path):
    """`shader.groove_pixel_width`: a groove thinner than a pixel is drawn as wide as the pixel's share of a cell
    asks and fainter in proportion (a box filter's), so the dots a sub-pixel line leaves at a few samples a pixel
    (pepper) give way to a faint, even shade: the filtered grooves still only darken, about as much over the wall
    (0.3-1.5 times the sharp ones' mean), and add far less to their darkest pixels."""
    grain = ("render.params.mucosa.grain=1.5", "render.params.vessels.density=0")
    plain = _wet_render(tmp_path / "plain.npz", "render.shader.groove_strength=0", "render.shader.groove_darkening=0",
                        *grain)
    sharp, filtered = (_wet_render(tmp_path / f"w{w}.npz", f"render.shader.groove_pixel_width={w}", *grain)
                       for w in (0, 0.5))
    wall = plain["depth"] < 1e9
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    dark_sharp, dark_filtered = ((plain["albedo"] - r["albedo"]) @ luma for r in (sharp, filtered))
    # still only darkens (to 1e-4: the relief's tilt moves the diffuse share of the albedo pass a little)
    assert dark_filtered[wall].min() > -1e-4, dark_filtered[wall].min()
    mean_sharp, mean_filtered = dark_sharp[wall].mean(), dark_filtered[wall].mean()
    # about as much over the wall: 0.49 of it here (the noise's values crowd round its middle, so a band n times
    # wider covers less than n times the wall)
    assert 0.3 < mean_filtered / mean_sharp < 1.5, (mean_sharp, mean_filtered)
    # what the grooves add to each pixel of the image (their colour and their relief's shade)
    shade_sharp, shade_filtered = (np.abs((r["rgb"] - plain["rgb"]) @ luma)[wall] for r in (sharp, filtered))
    # 90th percentiles 0.021 -> 0.007, 99th 0.17 -> 0.08 (of 1, linear) at this 64 px view
    for q, most in ((90, 0.5), (99, 0.6)):
        assert np.percentile(shade_filtered, q) < most * np.percentile(shade_sharp, q), (
            q, np.percentile(shade_sharp, q), np.percentile(shade_filtered, q))


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_the_grooves_are_cut_into_open_strokes(tmp_path):
    """`shader.groove_cut`: a finer noise lifts the grooves back to the surface in places, so the closed lines of
    version 11 become open strokes: the cut lines only lose colour, about half of the lined wall keeps some, and
    what is left falls apart into more, shorter pieces."""
    from scipy import ndimage

    grain = ("render.params.mucosa.grain=1.5", "render.params.vessels.density=0", "render.shader.groove_strength=0")
    plain = _wet_render(tmp_path / "plain.npz", "render.shader.groove_darkening=0", *grain)
    closed, cut = (_wet_render(tmp_path / f"cut{c}.npz", f"render.shader.groove_cut={c}", *grain) for c in (0, 1))
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    dark_closed, dark_cut = ((plain["albedo"] - r["albedo"]) @ luma for r in (closed, cut))
    wall = plain["depth"] < 1e9
    assert (dark_cut[wall] <= dark_closed[wall] + 1e-6).all()  # the cut only lifts lines, never adds any
    lines_closed, lines_cut = (wall & (d > 1e-3) for d in (dark_closed, dark_cut))
    kept = lines_cut.sum() / lines_closed.sum()
    assert 0.25 < kept < 0.8, kept  # 0.48 (17% of the wall lined, 8% after the cut)
    pieces_closed, pieces_cut = (ndimage.label(lines, structure=np.ones((3, 3)))[1] for lines in (lines_closed, lines_cut))
    # pixels per piece: shorter strokes (3.1 -> 1.7 at 64 px)
    assert lines_cut.sum() / pieces_cut < 0.7 * lines_closed.sum() / pieces_closed, (pieces_closed, pieces_cut, kept)


BAKE_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from synthmed.render.config import compose_render, resolve_config
    from synthmed.render.scene import ColonScene

    for k, texel in enumerate(sys.argv[2:]):  # one Blender start for every texel: pattern 0 baked at each
        cfg = resolve_config(compose_render(["render.resolution=64", f"render.textures.texel_mm={texel}"]))
        np.save(f"{sys.argv[1]}{k}.npy", ColonScene(cfg, threads=2).bake_pattern(0))
""")


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_the_capillary_net_keeps_its_ink_at_any_texel(tmp_path, cfg):
    """The capillary net (the baked pattern's fifth channel) is drawn no thinner than a texel: at the 128-px
    texel (0.4 mm, 0.12 cells) its 0.07-cell lines are widened and faded to 0.07 / 0.12 of full strength, at
    0.2 mm they are drawn whole; either way the net's mean (its ink) is the one the shader fades to far away
    (`shader.capillary_mean`), and it is a net of lines, not a tint."""
    textures, shader = cfg["textures"], cfg["shader"]
    texels = (0.4, 0.2)
    proc = subprocess.run([sys.executable, "-c", BAKE_SCRIPT, str(tmp_path / "p"), *map(str, texels)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for k, texel in enumerate(texels):
        net = np.load(tmp_path / f"p{k}.npy")[..., 4] / 255.0
        strength = min(1.0, textures["capillary_width"] / (texel * textures["capillary_scale"]))
        assert net.max() == pytest.approx(strength, abs=1.5 / 255), (texel, net.max())
        assert net.mean() == pytest.approx(shader["capillary_mean"], rel=0.1), (texel, net.mean())
        lined = (net > 0.5 * strength).mean()
        assert 0.05 < lined < 0.4, (texel, lined)


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_the_capillary_net_draws_lines_near_and_its_mean_tint_far(tmp_path):
    """`vessels.capillary_contrast` turns the wall toward the vessels' colour along the capillary net's lines
    where a pixel spans under a texel of the pattern, and evenly (its mean) where a pixel spans many: fine lines
    near the lens, no speckle far away, and no step in brightness between the two. Down the lumen from beside
    the wall: near wall and far lumen in one frame."""
    from scipy import ndimage

    view = {"camera.view": "lumen", "camera.offset": 0.7, "camera.toward_wall_deg": 0.0}
    plain, netted = (_wet_render(tmp_path / f"c{c}.npz", f"render.params.vessels.capillary_contrast={c}", params=view)
                     for c in (0, 1))
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    darker = (plain["albedo"] - netted["albedo"]) @ luma
    wall = plain["depth"] < 1e9
    assert darker[wall].min() > -1e-6, darker[wall].min()  # toward the (darker) vessels' colour only
    spans = plain["depth"] * float(plain["texels_per_mm"])  # texels a pixel spans on a wall facing the lens
    near = ndimage.binary_erosion(wall & (spans < 1.5), iterations=2)
    # past 2.5 texels on a wall facing the lens, more on the oblique wall: mostly or wholly faded (1.5-3.5)
    far = ndimage.binary_erosion(wall & (spans > 2.5), iterations=2)
    assert near.sum() > 500 and far.sum() > 30, (near.sum(), far.sum())  # 2006 and 211 pixels
    detail = np.abs(darker - ndimage.gaussian_filter(darker, 1.0))
    line_near, line_far = (np.mean(detail[m]) / np.mean(darker[m]) for m in (near, far))
    # 0.36 and 0.07 (far, without the fade: 0.49)
    assert line_near > 0.2 and line_far < 0.15, (line_near, line_far)
    assert 0.7 < np.mean(darker[far]) / np.mean(darker[near]) < 1.4, (darker[far].mean(), darker[near].mean())  # 1.14


# a flat lesion of the mucosa's own colour and no texture of its own, close in front of WET_SCRIPT's scope: what
# the lesion tests below change one knob of
FLAT_LESION = {"lesion.present": 1, "lesion.placement": "view", "lesion.view_offaxis": 0.2, "lesion.type": "flat",
               "lesion.size_mm": 14.0, "lesion.height_mm": 1.0, "lesion.plateau": 0.6, "lesion.tilt_deg": 0.0,
               "lesion.behind_fold": 0, "lesion.redness": 0.0, "lesion.hue_jitter": 0.0, "lesion.texture_strength": 0.0,
               "lesion.surface": "smooth", "lesion.mucus": 0, "lesion.lobulation": 0.0, "lesion.lobes": 0.0,
               "lesion.nodules": 0.0}


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_the_walls_colour_regions_turn_stretches_of_it_yellower(tmp_path):
    """`params.mucosa.tint` turns regions of the wall (a slow noise: `shader.pattern_tint_*`) toward the tint
    colour (`shader.mucosa_tint`: yellower, darker): down the lumen, some of the wall changes and some does not,
    in a few large pieces, not a speckle; where it changes it is yellower (G / R up) and no lighter; the
    geometry is the same."""
    from scipy import ndimage

    view = {"camera.view": "lumen", "camera.offset": 0.5, "camera.toward_wall_deg": 0.0, "vessels.density": 0.0}
    plain, tinted = (_wet_render(tmp_path / f"t{t}.npz", params={**view, "mucosa.tint": t}) for t in (0.0, 1.0))
    assert np.array_equal(plain["depth"], tinted["depth"])
    wall = plain["depth"] < 1e9
    changed = wall & (np.abs(tinted["albedo"] - plain["albedo"]).max(axis=-1) > 0.01)
    share = changed.sum() / wall.sum()
    assert 0.1 < share < 0.9, share  # regions: neither none of the wall nor all of it
    pieces, count = ndimage.label(changed)
    largest = np.bincount(pieces.ravel())[1:].max()
    assert largest > 0.5 * changed.sum(), (count, largest, changed.sum())  # one large stretch, not a speckle
    eps = 1e-4
    ratio = {name: r["albedo"][changed][:, 1] / (r["albedo"][changed][:, 0] + eps) for name, r in
             (("plain", plain), ("tinted", tinted))}
    assert (ratio["tinted"] > ratio["plain"]).mean() > 0.95, (ratio["tinted"] > ratio["plain"]).mean()
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    assert (tinted["albedo"][changed] @ luma <= plain["albedo"][changed] @ luma + 1e-4).all()


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_a_lesion_shows_the_walls_pattern_where_it_lies(tmp_path):
    """`lesion.wall_pattern`: the mucosa's pattern (mottle, vessels, capillary net) runs on over a lesion, read
    where the wall around its foot reads it (`LumenGeometry.angle_map`). A flat lesion of the mucosa's own colour
    and no texture of its own shows, at 1, the pattern the bare wall shows at its pixels (its chromaticity, which
    the coat's and sheen's grey reflections leave alone, correlates with the bare wall's; 0.58: it stands 0.6 mm
    proud, a pixel of parallax, and the capillary lines are a pixel wide), and at 0 one flat colour."""
    lesion = {**FLAT_LESION, "lesion.stipple": 0.0, "vessels.density": 1.0, "vessels.contrast": 0.85,
              "vessels.capillary_contrast": 1.0}
    bare, covered, flat = (_wet_render(tmp_path / f"{name}.npz", "render.resolution=96", params={**lesion, **extra})
                           for name, extra in (("bare", {"lesion.present": 0}), ("covered", {"lesion.wall_pattern": 1.0}),
                                               ("flat", {"lesion.wall_pattern": 0.0})))
    from scipy import ndimage

    on = ndimage.binary_erosion(covered["index"] > 0.5)  # the lesion, but for its outline's mixed pixels
    assert on.sum() > 500, on.sum()  # 1282

    def chroma(render):
        albedo = np.maximum(render["albedo"], 1e-6)
        return np.log(albedo[..., 1] / albedo[..., 0])[on]

    wall, shown, plain = chroma(bare), chroma(covered), chroma(flat)
    assert np.corrcoef(shown, wall)[0, 1] > 0.4, np.corrcoef(shown, wall)[0, 1]
    assert shown.std() > 0.5 * wall.std() and plain.std() < 0.1 * shown.std(), (wall.std(), shown.std(), plain.std())


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_a_lesions_stipple_is_dots_darker_and_redder_than_it(tmp_path):
    """`lesion.stipple`: fine dots over a lesion (an adenoma's capillaries round its crypt openings), darker and
    redder than the lesion (`shader.lesion_stipple`), in a fraction of the cells of a world-space Voronoi field of
    `lesion.stipple_scale` cells per mm; 0 leaves the lesion one colour. A flat lesion of its own flat colour (no
    wall pattern, no texture), close, 1 cell per mm: the dots are separate blobs of a few pixels (a 3D field:
    where the surface passes near a cell's point, so their size on the surface varies)."""
    lesion = {**FLAT_LESION, "lesion.wall_pattern": 0.0, "lesion.stipple_scale": 1.0}
    plain, dotted = (_wet_render(tmp_path / f"s{s}.npz", "render.resolution=96", params={**lesion, "lesion.stipple": s})
                     for s in (0.0, 1.0))
    from scipy import ndimage

    on = ndimage.binary_erosion(dotted["index"] > 0.5, iterations=2)
    assert on.sum() > 500, on.sum()
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    flat, spotted = (r["albedo"] @ luma for r in (plain, dotted))
    assert flat[on].std() < 0.02 * flat[on].mean(), flat[on].std()  # 0: one colour
    dark = on & (spotted < 0.85 * flat)  # the dots
    assert 0.03 < dark.sum() / on.sum() < 0.6, dark.sum() / on.sum()  # 0.08
    chroma = {k: np.log(np.maximum(r["albedo"][..., 1], 1e-6) / np.maximum(r["albedo"][..., 0], 1e-6))
              for k, r in (("plain", plain), ("dotted", dotted))}
    assert np.mean(chroma["dotted"][dark] - chroma["plain"][dark]) < -0.05  # redder: less green to red (-0.15)
    dots, count = ndimage.label(dark)
    assert count >= 10, count  # many dots, not one blot (23)
    assert np.median(np.bincount(dots.ravel())[1:]) < 20  # each a few pixels (4)


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_a_lesions_nodules_are_small_domes_each_with_its_glint(tmp_path):
    """`lesion.nodules`: an adenoma's granular surface, small domes of a world-space Voronoi field of
    `lesion.nodule_scale` cells per mm, each tilting the normal every way (so each catches the tip light), the
    crevices between them darker (`shader.lesion_nodule_darkening`); 0 leaves the lesion smooth and one colour. A
    flat lesion of its own flat colour (no wall pattern, no stipple), close: with nodules its shading varies over
    a few pixels and its glints are many small ones."""
    lesion = {**FLAT_LESION, "lesion.wall_pattern": 0.0, "lesion.stipple": 0.0, "lesion.nodule_scale": 0.8,
              "mucosa.bump_strength": 0.0}  # no droplets' glints
    smooth, grainy = (_wet_render(tmp_path / f"n{n}.npz", "render.resolution=96", params={**lesion, "lesion.nodules": n})
                      for n in (0.0, 1.0))
    from scipy import ndimage

    on = ndimage.binary_erosion(grainy["index"] > 0.5, iterations=2)
    assert on.sum() > 500 and np.array_equal(smooth["index"] > 0.5, grainy["index"] > 0.5), on.sum()  # same outline
    flat, crevices = (r["albedo"] @ LUMA for r in (smooth, grainy))
    assert flat[on].std() < 0.02 * flat[on].mean(), flat[on].std()  # 0: one colour
    assert (crevices[on] <= flat[on] + 1e-4).all()  # the crevices only darken
    dark = on & (crevices < 0.9 * flat)
    assert 0.1 < dark.sum() / on.sum() < 0.8, dark.sum() / on.sum()  # the crevices between the domes (0.48)
    lum = {k: r["rgb"] @ LUMA for k, r in (("smooth", smooth), ("grainy", grainy))}

    def fine(k):  # the light's detail finer than a gaussian of 1 px, over the light
        return np.median(np.abs(lum[k] - ndimage.gaussian_filter(lum[k], 1.0))[on] / np.maximum(lum[k][on], 1e-4))

    assert fine("grainy") > 3.0 * fine("smooth"), (fine("smooth"), fine("grainy"))  # 0.0069 -> 0.069

    def glints(k):  # blobs of light over 3x the lesion's median
        blobs, count = ndimage.label(on & (lum[k] > 3.0 * np.median(lum[k][on])))
        return count, np.bincount(blobs.ravel())[1:]

    (n0, s0), (n1, s1) = glints("smooth"), glints("grainy")
    assert n0 <= 2 and n1 >= 5, (n0, n1)  # one glint of 20 px -> 12 of 1-2 px
    assert np.median(s1) <= 4 and s0.max() > 2 * np.median(s1), (s0, s1)


def test_far_smoothing_evens_the_far_lumen_and_leaves_the_near_wall():
    """post.far_smoothing: a speckle of lit and shadowed samples far down the lumen is averaged at its own
    distance (the mean kept, the spread cut); the near wall is left exactly as it was, and a bright near fold
    never bleeds onto the dark lumen behind it."""
    from synthmed.render.post import far_smoothing

    size = 64
    rng = np.random.default_rng(0)
    depth = np.full((size, size), 30.0)
    depth[:, 32:] = 200.0  # the right half far down the lumen
    depth[:4, 60:] = 1e10  # a corner that sees nothing
    lin = np.full((size, size, 3), 0.8, np.float32)  # the near wall: bright
    speckle = (rng.random((size, 32)) < 0.3).astype(np.float32)  # 30% of the far pixels shadowed
    lin[:, 32:] = (0.1 * (1.0 - speckle))[..., None]
    lin[:4, 60:] = 0.0
    out = far_smoothing(lin, depth, 1.5, (60.0, 120.0), 1.3)
    assert out.dtype == np.float32 and out.shape == lin.shape
    assert np.array_equal(out[:, :32], lin[:, :32])  # nearer than the ramp: untouched
    assert not out[:4, 60:].any()  # no surface: nothing
    inner = (slice(8, 56), slice(40, 56))  # far pixels away from the frame's and the fold's edges
    assert out[inner].std() < 0.4 * lin[inner].std(), (out[inner].std(), lin[inner].std())
    assert out[inner].mean() == pytest.approx(lin[inner].mean(), rel=0.05)
    assert out[:, 32:36].max() <= 0.1 + 1e-6  # next to the bright fold: no light from it
    assert far_smoothing(lin, depth, 0.0, (60.0, 120.0), 1.3) is lin  # 0: off


FAR_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from synthmed.render.config import compose_render, resolve_config, sample_params
    from synthmed.render.scene import ColonScene

    cfg = resolve_config(compose_render(["render.resolution=64", "render.textures.mode=procedural"]))
    scene = ColonScene(cfg, threads=2)
    # straight down the lumen: the far wall a few pixels wide, its folds and their crescents under a pixel
    params = {**sample_params(cfg, 0), "camera.offset": 0.0, "camera.yaw_deg": 0.0, "camera.pitch_deg": 0.0,
              "camera.view": "lumen", "camera.toward_wall_deg": 0.0, "camera.fov_deg": 150.0, "lesion.present": 0}
    passes = {}
    for seed in (1, 2):  # two Cycles seeds: the same scene, other samples
        r = scene.render(params, seed)
        passes.update({f"{k}{seed}": r[k] for k in ("rgb", "albedo", "diffuse", "index", "depth")})
    np.savez(sys.argv[1], **passes)
""")


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_far_smoothing_cuts_the_far_lumens_sampling_speckle(tmp_path, cfg):
    """Rendered down the lumen with two Cycles seeds: far down it (past the middle of `endoscope.far_smoothing_mm`)
    the two frames differ by much less with the smoothing than without (sampling speckle, not the scene); nearer
    than the ramp's start the pixels are the same bytes either way."""
    proc = subprocess.run([sys.executable, "-c", FAR_SCRIPT, str(tmp_path / "far.npz")], capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = dict(np.load(tmp_path / "far.npz"))
    # the halo and the processor's enhancement mix near and far pixels a little
    params = {**sample_params(cfg, 0), "camera.fov_deg": 150.0, "endoscope.enhance": 0.0}
    cfg = {**cfg, "endoscope": {**cfg["endoscope"], "lens_halo": 0.0}}
    off = {**cfg, "endoscope": {**cfg["endoscope"], "far_smoothing_px": 0.0}}
    near_mm, far_mm = cfg["endoscope"]["far_smoothing_mm"]
    images = {}
    for name, c in (("on", cfg), ("off", off)):
        for seed in (1, 2):
            frame = {k: saved[f"{k}{seed}"] for k in ("rgb", "albedo", "diffuse", "index", "depth")}
            images[name, seed] = finish_frame(frame, params, c)["image"].astype(np.float32)
    depth = saved["depth1"]
    inside = images["off", 1].any(axis=-1)
    far, near = inside & (depth > 0.5 * (near_mm + far_mm)) & (depth < 1e9), inside & (depth < near_mm)
    assert far.sum() > 40 and near.sum() > 1000, (far.sum(), near.sum())
    for seed in (1, 2):
        assert np.array_equal(images["on", seed][near], images["off", seed][near])
    spread = {name: np.abs(images[name, 1] - images[name, 2]).mean(axis=-1)[far].mean() for name in ("on", "off")}
    assert spread["on"] < 0.6 * spread["off"], spread


DOWN_THE_LUMEN = {"camera.offset": 0.2, "camera.toward_wall_deg": 0.0, "mucosa.grain": 0.0}  # near wall and far


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_vessels_fade_with_distance(tmp_path):
    """`shader.vessel_fade_*`: the vessels' contrast falls with the distance from the lens, from all of it nearer
    than the first edge to `vessel_fade_floor` of it beyond the second (a linear ramp between). Mixing toward the
    vessels' colour is linear in their contrast, so the darkening the faded vessels leave over a wall without
    vessels is the unfaded darkening x that ramp, pixel by pixel; the rest of the wall is untouched."""
    net = ("render.params.vessels.density=1", "render.params.vessels.contrast=0.85",
           "render.params.vessels.capillary_contrast=0", "render.shader.vessel_fade_edges=[15,35]")
    renders = {name: _wet_render(tmp_path / f"{name}.npz", *net, *extra, params=DOWN_THE_LUMEN) for name, extra in (
        ("bare", ["render.params.vessels.contrast=0"]), ("even", ["render.shader.vessel_fade_floor=1"]),
        ("faded", ["render.shader.vessel_fade_floor=0.25"]))}
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    even, faded = ((renders["bare"]["albedo"] - renders[k]["albedo"]) @ luma for k in ("even", "faded"))
    depth = renders["bare"]["depth"]
    vessel = (depth > 0) & (depth < 1e9) & (even > 2e-3)
    near, far = vessel & (depth < 14.0), vessel & (depth > 36.0)
    assert near.sum() > 20 and far.sum() > 20, (near.sum(), far.sum())
    # pixel by pixel, but for the odd pixel on a fold's edge, whose samples lie either side of an edge of the ramp
    # (version 23's vessel tree puts one of 62 near pixels there)
    for pixels, share in ((near, 1.0), (far, 0.25)):
        gap = np.abs(faded[pixels] - share * even[pixels])
        assert (gap < 1e-4).mean() > 0.95 and np.median(gap) < 1e-5, ((gap < 1e-4).mean(), np.median(gap))
    ramp = np.clip((depth - 15.0) / 20.0, 0.0, 1.0)
    off = np.abs(faded - even * (1.0 - 0.75 * ramp))[vessel]
    # between the edges, a pixel whose samples straddle a fold's edge mixes two distances its depth averages
    assert (off < 5e-4).mean() > 0.97 and np.median(off) < 1e-4, ((off < 5e-4).mean(), np.median(off))
    assert np.abs(faded[~vessel & (even == 0)]).max() < 1e-6


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_twigs_are_paler_and_fainter_than_trunks(tmp_path):
    """`shader.vessel_calibre_edges`, `vessel_twig_contrast`, `vessel_twig`: a trunk keeps the vessels' colour and
    contrast, a twig is drawn fainter and in a paler colour. Against the net drawn in one colour and contrast (a
    twig's shift the identity), every vessel pixel darkens the wall as much or less; the trunks' pixels nearly as
    much, the twigs' far less; the rest of the wall is untouched."""
    net = ("render.params.vessels.density=1", "render.params.vessels.contrast=0.85",
           "render.params.vessels.capillary_contrast=0", "render.shader.vessel_fade_floor=1")
    one_colour = ("render.shader.vessel_twig_contrast=1", "render.shader.vessel_twig.hue_shift=0",
                  "render.shader.vessel_twig.saturation_scale=1", "render.shader.vessel_twig.value_scale=1")
    renders = {name: _wet_render(tmp_path / f"{name}.npz", *net, *extra, params=DOWN_THE_LUMEN) for name, extra in (
        ("bare", ["render.params.vessels.contrast=0"]), ("even", one_colour), ("calibre", []))}
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    even, calibre = ((renders["bare"]["albedo"] - renders[k]["albedo"]) @ luma for k in ("even", "calibre"))
    depth = renders["bare"]["depth"]
    vessel = (depth < 1e9) & (even > 5e-3)
    assert vessel.sum() > 100, vessel.sum()
    share = calibre[vessel] / even[vessel]
    assert share.max() < 1.0 + 1e-3 and share.min() > 0.0, (share.min(), share.max())
    trunks, twigs = (share > 0.9).mean(), (share < 0.6).mean()
    assert trunks > 0.05 and twigs > 0.2, (trunks, twigs)
    assert np.abs(calibre[(depth < 1e9) & (even == 0)]).max() < 1e-6
