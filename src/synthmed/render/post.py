"""Numpy post-processing of a rendered frame: the fill light (light the wall scatters back, which a
direct-light render leaves out), optics (glare, defocus, motion blur), the video processor (light
control, tone curve), exposure, vignetting, the endoscope's field-of-view border, sRGB encoding, the exact
lesion mask and its box. Deterministic: same arrays in, same bytes out."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.render.nodes import light_tint
from synthmed.utils import atomic_path


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
    """The scope's optics on linear RGB: glare (highlights bloom: `optics.glare`), defocus (a gaussian of
    `optics.defocus_sigma` of the width) and motion blur (a streak of `optics.motion_blur_length` of the width).
    Only the image: the lesion mask stays the geometry's."""
    from scipy import ndimage

    size = lin.shape[1]
    out = lin.astype(np.float32, copy=True)
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


def processor(lin: np.ndarray, inside: np.ndarray, endo: Mapping) -> np.ndarray:
    """The video processor's brightness control and tone curve on linear RGB. The gain brings the
    `exposure_percentile` of the luminance inside the border to `exposure_target` (no more than
    `exposure_max_gain`, nor less than 1 / it: the scope's light control); the curve
    y = (1 + k) L / (1 + k L), k = `tone_lift`, then lifts the shadows (the wall a few folds down stays
    visible) and scales each pixel's RGB by y / L, keeping its hue and saturation. k = 0 is a plain gain."""
    lum = lin @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    level = float(np.percentile(lum[inside], float(endo["exposure_percentile"]))) if inside.any() else 0.0
    limit = float(endo["exposure_max_gain"])
    gain = float(np.clip(float(endo["exposure_target"]) / level, 1.0 / limit, limit)) if level > 0.0 else limit
    lum = lum * np.float32(gain)
    k = np.float32(endo["tone_lift"])
    scale = np.float32(gain) * (1.0 + k) / (1.0 + k * lum)
    return lin * scale[..., None]


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
    lit = np.clip(rgb, 0.0, None) + fill_light(np.asarray(rendered["albedo"], np.float32), rendered["depth"], p, endo, tint)
    lin = processor(optics(lit, p, endo), inside, endo)
    lin = lin * np.float32(2.0 ** float(p["endoscope.exposure_ev"])) * vignette[..., None]
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(np.maximum(lin, 0.0031308), 1 / 2.4) - 0.055)
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
