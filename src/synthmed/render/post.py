"""Numpy post-processing of a rendered frame: translucency (light the tissue carries under its surface), the
fill light (light the wall scatters back, which a direct-light render leaves out), optics (glare, defocus,
motion blur), the video processor (light control, tone curve, black level), the dim wall's deeper red (light
that has bounced off the wall and travelled under it), exposure, vignetting, the processor's
highlight chroma suppression, sRGB encoding, the processor's structure enhancement, the endoscope's field-of-view
border, the exact lesion mask and its box.
Deterministic: same arrays in, same bytes out."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from synthmed.render.camera import fisheye_focal_px
from synthmed.render.nodes import light_tint
from synthmed.utils import atomic_path

LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec. 709 luminance weights (linear RGB; luma on encoded)


def border_mask(size: int, shape: str, radius: float, octagon_cut: float) -> np.ndarray:
    """HxW bool: pixels inside the scope's field-of-view border (a circle, or a square with cut corners)."""
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    y, x = np.meshgrid(c, c, indexing="ij")
    if shape == "circle":
        return x * x + y * y <= radius * radius
    if shape == "octagon":
        return np.abs(x) + np.abs(y) <= 2.0 - 2.0 * octagon_cut
    raise ValueError(f"render.params.endoscope.border: unknown border {shape!r} (circle, octagon)")


def line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A normalised streak of `length` pixels at `angle_deg` (motion blur), sampled on an odd square grid."""
    half = max(1, int(np.ceil(length / 2.0)))
    c = np.arange(-half, half + 1, dtype=np.float64)
    y, x = np.meshgrid(c, c, indexing="ij")
    a = np.deg2rad(angle_deg)
    along = x * np.cos(a) + y * np.sin(a)
    across = -x * np.sin(a) + y * np.cos(a)
    k = np.clip(1.0 - np.abs(across), 0.0, 1.0) * (np.abs(along) <= length / 2.0)
    return (k / k.sum()).astype(np.float32)


def optics(lin: np.ndarray, p: Mapping[str, Any], endo: Mapping) -> np.ndarray:
    """The scope's optics on linear RGB: the lens's halo (a fraction `endoscope.lens_halo` of every pixel's
    light spread over a gaussian of `lens_halo_sigma` of the width: a glint tens of times over full scale
    stays white a pixel or two around its core, as a real scope's do, while the rest barely softens), glare
    (highlights bloom: `optics.glare`), defocus (a gaussian of `optics.defocus_sigma` of the width) and motion
    blur (a streak of `optics.motion_blur_length` of the width). Only the image: the lesion mask stays the
    geometry's."""
    from scipy import ndimage

    size = lin.shape[1]
    out = lin.astype(np.float32, copy=True)
    halo = float(endo["lens_halo"])
    if halo > 0.0:
        sigma = float(endo["lens_halo_sigma"]) * size
        out = (1.0 - halo) * out + halo * ndimage.gaussian_filter(out, (sigma, sigma, 0.0), mode="nearest")
    glare = float(p["optics.glare"])
    if glare > 0.0:
        excess = np.clip(out.max(axis=-1) - float(endo["glare_threshold"]), 0.0, None)
        bloom = ndimage.gaussian_filter(excess, float(endo["glare_sigma"]) * size, mode="constant")
        out += (glare * float(endo["glare_gain"]) * bloom)[..., None].astype(np.float32)
    if int(p["optics.defocus"]):
        sigma = float(p["optics.defocus_sigma"]) * size
        out = ndimage.gaussian_filter(out, (sigma, sigma, 0.0), mode="nearest")
    if int(p["optics.motion_blur"]):
        kernel = line_kernel(float(p["optics.motion_blur_length"]) * size, float(p["optics.motion_blur_angle_deg"]))
        out = np.stack([ndimage.convolve(out[..., k], kernel, mode="nearest") for k in range(out.shape[-1])], axis=-1)
    return out


def fill_light(albedo: np.ndarray, depth: np.ndarray, p: Mapping[str, Any], endo: Mapping, tint) -> np.ndarray:
    """Linear RGB of the light the lumen scatters back onto itself, which a direct-light render (no bounces)
    leaves out: shadows behind folds are then dark, not black. A pixel receives `light.fill` of the irradiance a
    surface facing the tip light would receive at its distance (the distance to the lens, at least
    `fill_min_distance_mm`), whatever way it faces and whether or not it is shadowed; lit as a diffuse surface
    of the pass's albedo. Cycles' point light of power P gives E = P / (4 pi d^2) and a diffuse surface
    radiance albedo x E / pi. Pixels that see no surface get none."""
    power = float(p["light.power_w"]) * float(endo["light_power_scale"])
    distance = np.maximum(depth, float(endo["fill_min_distance_mm"]))
    irradiance = np.where(depth < 1e9, float(p["light.fill"]) * power / (4.0 * np.pi ** 2) / distance ** 2, 0.0)
    return albedo * irradiance[..., None].astype(np.float32) * np.asarray(tint, np.float32)


def depth_slices(depth: np.ndarray, ratio: float):
    """Cut the surfaces seen (depth < 1e9, mm along each ray) into slices centred at `ratio` ** k mm. A pixel
    belongs to its two nearest slices (linear weights in log depth). Yields (centre mm, HxW float32 weight)."""
    surface = depth < 1e9
    if not surface.any():
        return
    step = np.log(float(ratio))
    position = np.where(surface, np.log(np.maximum(depth, 1e-6)) / step, 0.0)
    lower = np.floor(position).astype(np.int64)
    upper_weight = (position - lower).astype(np.float32)
    for k in range(int(lower[surface].min()), int(lower[surface].max()) + 2):
        weight = np.where(lower == k, 1.0 - upper_weight, 0.0) + np.where(lower + 1 == k, upper_weight, 0.0)
        weight = (weight * surface).astype(np.float32)
        if weight.any():
            yield float(np.exp(k * step)), weight


def _slice_share(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """A slice's share of `values` blurred over the slice's pixels only (a normalised convolution: its blurred
    weighted values over its blurred weight, times its weight): nothing crosses to a surface at another distance.
    Worked out on the slice's box grown by the gaussian's reach (what scipy's filter reads), not the whole frame:
    the same numbers, since the rest is zero."""
    share = np.zeros_like(values, dtype=np.float32)
    rows, cols = np.nonzero(weight.any(axis=1))[0], np.nonzero(weight.any(axis=0))[0]
    reach = int(4.0 * float(sigma) + 0.5)  # scipy's default truncate (4 sigmas)
    box = (slice(max(rows[0] - reach, 0), rows[-1] + reach + 1), slice(max(cols[0] - reach, 0), cols[-1] + reach + 1))
    w = weight[box]
    total = gaussian_filter(w * values[box], sigma, mode="constant")
    share[box] = w * total / np.maximum(gaussian_filter(w, sigma, mode="constant"), 1e-6)
    return share


def translucency(diffuse: np.ndarray, albedo: np.ndarray, depth: np.ndarray, focal_px: float,
                 radius_mm, depth_ratio: float) -> np.ndarray:
    """What light carried under the surface adds to the render (HxWx3, add it to the Combined pass): tissue is
    translucent, so a point's diffuse light is spread over the surface round it, red farthest (`radius_mm`, per
    RGB channel: a gaussian of this sigma on the surface). Shadow edges then soften into a dark red; the light
    never crosses to a surface at another distance (a fold's rim does not glow onto the wall behind it).

    `diffuse` is Cycles' Diffuse Direct pass (the light the diffuse closures received; albedo x it is their share
    of the Combined pass), `depth` the distance along each ray in mm (>= 1e9: no surface), `focal_px` the
    fisheye's focal length in pixels (near the axis 1 mm at distance d spans focal_px / d pixels). Each of
    `depth_slices` is blurred alone at the sigma of its centre's distance. Spreads under 0.3 px are left out."""
    light = np.nan_to_num(np.asarray(diffuse, np.float32), nan=0.0, posinf=0.0, neginf=0.0)  # NaN: albedo 0
    depth = np.asarray(depth, np.float64)
    surface = depth < 1e9
    spread = light * ~surface[..., None]
    if not surface.any():
        return np.zeros_like(light)
    for centre, weight in depth_slices(depth, depth_ratio):
        for c, radius in enumerate(radius_mm):
            sigma = float(radius) * focal_px / centre
            if sigma < 0.3:
                spread[..., c] += weight * light[..., c]
                continue
            spread[..., c] += _slice_share(light[..., c], weight, sigma)
    return np.asarray(albedo, np.float32) * (spread - light)


def far_smoothing(lin: np.ndarray, depth: np.ndarray, sigma_px: float, ramp_mm, depth_ratio: float) -> np.ndarray:
    """The far lumen's light averaged over neighbouring pixels at the same distance (linear RGB in and out). Far
    down the lumen a pixel spans many folds and the crescents they shade; a camera's pixel averages them, a few
    samples a pixel do not (a speckle of lit and shadowed samples). Each of `depth_slices` is blurred alone by a
    gaussian of `sigma_px` x its ramp: 0 at `ramp_mm[0]` and nearer, 1 at `ramp_mm[1]` and beyond (linear
    between). Fold edges against what lies behind them stay sharp; sigmas under 0.3 px are left out."""
    near, far = (float(v) for v in ramp_mm)
    if sigma_px <= 0.0:
        return lin
    out = np.array(lin, np.float32)
    for centre, weight in depth_slices(np.asarray(depth, np.float64), depth_ratio):
        sigma = float(sigma_px) * float(np.clip((centre - near) / (far - near), 0.0, 1.0))
        if sigma < 0.3:
            continue  # the slice's share of the pixels stays as it is
        for c in range(out.shape[-1]):
            out[..., c] += _slice_share(lin[..., c], weight, sigma) - weight * lin[..., c]
    return out


def processor(lin: np.ndarray, inside: np.ndarray, endo: Mapping) -> np.ndarray:
    """The video processor's brightness control and tone curve on linear RGB. The gain brings the
    `exposure_percentile` of the luminance inside the border to `exposure_target` (no more than
    `exposure_max_gain`, nor less than 1 / it: the scope's light control); the curve
    y = (1 + k) L / (1 + k L), k = `tone_lift`, then lifts the shadows (the wall a few folds down stays
    visible); the black level b = `black_level` then takes the pedestal off, y -> max(y - b, 0) / (1 - b), so
    the darkest of the far lumen goes black as a video chain's clamp leaves it. Each pixel's RGB is scaled
    by the result / L, keeping its hue and saturation. k = 0 and b = 0: a plain gain."""
    lum = lin @ LUMA
    level = float(np.percentile(lum[inside], float(endo["exposure_percentile"]))) if inside.any() else 0.0
    limit = float(endo["exposure_max_gain"])
    gain = float(np.clip(float(endo["exposure_target"]) / level, 1.0 / limit, limit)) if level > 0.0 else limit
    lum = lum * np.float32(gain)
    k = np.float32(endo["tone_lift"])
    scale = np.float32(gain) * (1.0 + k) / (1.0 + k * lum)
    b = np.float32(endo["black_level"])
    if b > 0:  # y / L -> (y - b) / ((1 - b) L): the curve's output y is lum * scale / gain
        y = lum * scale / np.float32(gain)
        scale = scale * np.where(y > b, (y - b) / (np.maximum(y, b) * (1 - b)), np.float32(0.0))
    return lin * scale[..., None]


def dim_reddening(lin: np.ndarray, depth: np.ndarray, strength: float, reference: float, most: float) -> np.ndarray:
    """The dim wall a deeper red: light that reaches a dim part of the lumen has mostly bounced off the wall and
    travelled under its surface first (the render is direct light only), and blood takes green and blue from it
    far more than red. A pixel n e-folds dimmer than `reference` (linear luminance after the processor's gain;
    n = ln(reference / L), at most `most`) has its G and B x exp(-`strength` x n) against its R, then is scaled
    back to its own luminance (only the colour moves): ln(G / R) and ln(B / R) fall by `strength` x n alike, as
    the reference frames' do from their lit to their dim wall. Pixels at or over `reference`, and those that see
    no surface, unchanged; 0: off."""
    if strength <= 0.0:
        return lin
    lum = lin @ LUMA
    n = np.clip(np.log(np.float32(reference) / np.maximum(lum, np.float32(1e-6))), 0.0, np.float32(most))
    n = np.where(depth < 1e9, n, np.float32(0.0))
    keep = np.exp(-np.float32(strength) * n)
    tinted = lin * np.stack([np.ones_like(keep), keep, keep], axis=-1)
    scale = lum / np.maximum(tinted @ LUMA, np.float32(1e-9))
    return np.where((n > 0.0)[..., None], tinted * scale[..., None], lin).astype(np.float32)


def highlights(lin: np.ndarray, knee: float) -> np.ndarray:
    """The video processor's highlight chroma suppression on linear RGB: where a pixel's largest channel passes
    `knee`, its colour is drawn toward the grey of its own luminance, just enough that the largest channel lands on
    knee + (1 - knee) tanh((m - knee) / (1 - knee)) (m: the channel before; under full scale always). Luminance is
    kept (up to full scale, where the pixel goes white), so an over-lit red wall or lesion near the lens turns
    pale pink, not one clipped channel of saturated red. Below the knee unchanged; knee >= 1: off."""
    if knee >= 1.0:
        return lin
    lum = (lin @ LUMA)[..., None]
    peak = lin.max(axis=-1, keepdims=True)
    span = np.float32(1.0 - knee)
    target = np.float32(knee) + span * np.tanh((peak - np.float32(knee)) / span)
    kept = np.clip((target - lum) / np.maximum(peak - lum, np.float32(1e-6)), 0.0, 1.0)
    return np.where(peak > knee, lum + (lin - lum) * kept, lin).astype(np.float32)


def enhance(srgb: np.ndarray, inside: np.ndarray, amount: float, sigma_px: float) -> np.ndarray:
    """The video processor's structure enhancement on the encoded signal: the luma's detail (the luma less its
    gaussian blur of `sigma_px`, taken inside the border only, so the black surround leaves no rim) x `amount`,
    added to R, G and B alike (luma only: chroma unchanged). Edges and fine texture gain contrast and a glint
    gets a thin dark ring, as a real processor's output shows. 0: unchanged."""
    if amount <= 0.0:
        return srgb
    weight = inside.astype(np.float32)
    luma = srgb @ LUMA
    blur = gaussian_filter(luma * weight, sigma_px, mode="nearest") / np.maximum(
        gaussian_filter(weight, sigma_px, mode="nearest"), np.float32(1e-6))
    return srgb + (np.float32(amount) * (luma - blur) * weight)[..., None]


def finish_frame(rendered: Mapping[str, Any], p: Mapping[str, Any], cfg: Mapping) -> dict[str, Any]:
    """Linear passes -> uint8 RGB, 0/255 mask, uint16 depth (mm) and the visible-lesion statistics."""
    rgb = np.asarray(rendered["rgb"], np.float32)
    size = rgb.shape[0]
    endo = cfg["endoscope"]
    inside = border_mask(size, p["endoscope.border"], float(p["endoscope.border_radius"]), float(endo["octagon_cut"]))
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    r2 = c[None, :] ** 2 + c[:, None] ** 2
    vignette = 1.0 - float(p["endoscope.vignette"]) * np.clip(r2 / 2.0, 0, 1) ** (float(endo["vignette_power"]) / 2.0)
    tint = light_tint(p["light.warmth"], cfg["shader"]["light_warmth_tint"])
    if not cfg["engine"]["subsurface"]:  # Cycles' random walk already carries the light under the surface
        shader = cfg["shader"]
        radius = np.asarray(shader["subsurface_radius"], np.float64) * float(shader["subsurface_scale"])
        focal = fisheye_focal_px(float(p["camera.fov_deg"]), size)
        rgb = rgb + translucency(rendered["diffuse"], rendered["albedo"], rendered["depth"], focal, radius,
                                 float(shader["translucency_depth_ratio"]))
    lit = np.clip(rgb, 0.0, None) + fill_light(np.asarray(rendered["albedo"], np.float32), rendered["depth"], p, endo, tint)
    lit = far_smoothing(lit, rendered["depth"], float(endo["far_smoothing_px"]), endo["far_smoothing_mm"],
                        float(cfg["shader"]["translucency_depth_ratio"]))
    lin = processor(optics(lit, p, endo), inside, endo)
    lin = dim_reddening(lin, rendered["depth"], float(endo["dim_reddening"]), float(endo["exposure_target"]),
                        float(endo["dim_reddening_most"]))
    lin = lin * np.float32(2.0 ** float(p["endoscope.exposure_ev"])) * vignette[..., None]
    lin = highlights(lin, float(endo["highlight_knee"]))
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(np.maximum(lin, 0.0031308), 1 / 2.4) - 0.055)
    srgb = enhance(np.clip(srgb, 0.0, 1.0), inside, float(p["endoscope.enhance"]), float(endo["enhance_sigma"]) * size)
    img = np.floor(np.clip(srgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    img[~inside] = 0
    lesion = (np.rint(rendered["index"]) == 1) & inside  # one sample per pixel: never blended
    mask = lesion.astype(np.uint8) * 255
    depth = np.where(inside & (rendered["depth"] < 1e9), np.rint(rendered["depth"]), 0).clip(0, 65535).astype(np.uint16)
    visible = int(lesion.sum())
    if visible:
        ys, xs = np.nonzero(lesion)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    else:
        bbox = [-1, -1, -1, -1]
    label = int(visible >= int(cfg["min_visible_pixels"]))
    return {"image": img, "mask": mask, "depth": depth, "visible_pixels": visible, "bbox": bbox, "label": label}


def png_bytes(array: np.ndarray) -> bytes:
    """PNG with fixed compression and no metadata (no time stamps): identical arrays -> identical bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a PNG atomically (temp file + rename): a kill leaves the old file or none, never half of one."""
    data = png_bytes(array)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask whose 4-neighbourhood leaves the mask."""
    m = np.asarray(mask) > 0
    pad = np.pad(m, 1)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return m & ~inner
