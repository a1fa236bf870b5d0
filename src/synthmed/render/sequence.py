"""Sequences (`render.mode=sequence`): the endoscope's path along the lumen, and the geometry passes of a frame
(metric depth, camera-space normals, optical flow to the next frame) in numpy. No bpy here.

A sequence is one scene (its parameters are those of its first frame) seen by a camera that advances
`sequence.step_mm` per frame along the centreline, rolls `sequence.roll_deg` per frame and shakes a little
(`sequence.jitter_mm`, `sequence.jitter_deg`). The flow is exact for the static scene: each pixel's point
(its ray through the equisolid fisheye times its depth) is moved into the next camera and projected there.
Conventions (camera axes, pixel coordinates) are those of `synthmed.render.camera`; docs/render.md,
"Sequences", gives the files.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.render.camera import camera_to_world, fisheye_project, scope_pose
from synthmed.render.config import RenderConfigError
from synthmed.render.lumen import centreline_frame
from synthmed.render.nodes import unit
from synthmed.utils import atomic_path

FLOW_UNKNOWN = 1e10  # Middlebury's "unknown flow" value: readers drop |flow| > 1e9
FLO_MAGIC = 202021.25  # the .flo header float ("PIEH")


def sequence_length(cfg: Mapping) -> int:
    """Frames per sequence; raises RenderConfigError naming the key unless `num_frames` is a multiple of it."""
    length, frames = int(cfg["sequence"]["length"]), int(cfg["num_frames"])
    if length < 1:
        raise RenderConfigError(f"render config key 'render.sequence.length' must be >= 1, got {length}")
    if frames % length:
        raise RenderConfigError(f"render config key 'render.num_frames' must be a multiple of "
                                f"'render.sequence.length' ({length}) in mode=sequence, got {frames}")
    if not -length <= int(cfg["sequence"]["lesion_frame"]) < length:
        raise RenderConfigError(f"render config key 'render.sequence.lesion_frame' must index a frame of the "
                                f"sequence ({-length}..{length - 1}), got {cfg['sequence']['lesion_frame']}")
    return length


@dataclass(frozen=True)
class CameraPose:
    """One frame's camera: position (mm) and orthonormal axes (image right, image up, optical axis), the
    centreline position it was placed at and its distance from the centreline."""

    position: np.ndarray
    right: np.ndarray
    up: np.ndarray
    forward: np.ndarray
    axial_mm: float
    offset_mm: float

    def camera_to_world(self) -> np.ndarray:
        """4 x 4, OpenCV camera axes (x right, y down, z forward), mm."""
        return camera_to_world(self.position, self.right, self.up, self.forward)


def camera_path(params: Mapping[str, Any], cfg: Mapping, length: int, ray_cast: Callable, seed: int) -> list[CameraPose]:
    """The camera of each of a sequence's `length` frames. Frame k sits at axial position camera.axial_mm +
    k x step_mm on the centreline, moved off it as the first frame is (camera.offset, offset_angle_deg: in
    the centreline's moving frame) plus a shake (normal, sd jitter_mm per axis), never closer to the wall
    than `scene.min_wall_clearance_mm` (`ray_cast(origin, direction)` finds the wall). It looks along the
    centreline's tangent turned by camera.yaw_deg / pitch_deg plus a shake (normal, sd jitter_deg) and
    rolled by camera.roll_deg + k x roll_deg. The shakes are drawn from `seed` (the sequence's). A scope turned
    toward the wall (camera.toward_wall_deg) is moved back toward the centreline until the wall straight ahead
    is `scene.min_view_distance_mm` away, as a still frame's is."""
    last = float(params["camera.axial_mm"]) + (length - 1) * float(params["sequence.step_mm"])
    if last >= float(cfg["scene"]["tube_length_mm"]):
        raise RenderConfigError(
            f"render config key 'render.sequence.length' ({length}): at params.sequence.step_mm "
            f"{float(params['sequence.step_mm']):.2f} the camera would leave the lumen (axial {last:.0f} mm, "
            f"scene.tube_length_mm {float(cfg['scene']['tube_length_mm']):.0f}): shorten the sequences or the steps")
    rng = np.random.default_rng([int(seed), zlib.crc32(b"sequence.jitter")])
    jitter_mm, jitter_deg = float(params["sequence.jitter_mm"]), float(params["sequence.jitter_deg"])
    poses = []
    for k in range(length):
        shake = rng.normal(0.0, 1.0, 5)  # drawn whatever the sizes: the stream never depends on them
        axial = float(params["camera.axial_mm"]) + k * float(params["sequence.step_mm"])
        centre, tangent, side = centreline_frame(params, axial)
        position, right, up, forward, offset = scope_pose(
            params, cfg["scene"], centre, tangent, side, ray_cast, shift_mm=shake[:3] * jitter_mm,
            turn_deg=(shake[3] * jitter_deg, shake[4] * jitter_deg), roll_deg=k * float(params["sequence.roll_deg"]),
            light_offset_mm=float(cfg["endoscope"]["light_offset_mm"]))
        poses.append(CameraPose(position, unit(right), unit(up), unit(forward), axial, offset))
    return poses


# ------------------------------------------------------------------------------------- geometry passes
def _times(vectors: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`vectors @ matrix` for (..., 3) vectors and a 3 x 3 matrix, summed in a fixed order: numpy's matmul may
    round differently with the memory layout or the BLAS threads, and the files must not depend on those."""
    v = np.asarray(vectors, np.float64)
    return np.stack([v[..., 0] * matrix[0, j] + v[..., 1] * matrix[1, j] + v[..., 2] * matrix[2, j] for j in range(3)],
                    axis=-1)


def _length(vectors: np.ndarray) -> np.ndarray:
    """Euclidean length over the last axis (3), in a fixed order (see `_times`)."""
    return np.sqrt(vectors[..., 0] ** 2 + vectors[..., 1] ** 2 + vectors[..., 2] ** 2)


def world_points(depth: np.ndarray, rays: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """H x W x 3 world points (mm) of a frame's pixels: ray (camera frame, unit) x depth (distance along it)."""
    return _times(rays * depth[..., None], c2w[:3, :3].T) + c2w[:3, 3]


def camera_normals(normal_world: np.ndarray, c2w: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """H x W x 3 float32 unit normals in the camera frame (OpenCV axes) from the world-space normal pass (the
    materials' smooth normal, `nodes.material_output`; an average over the samples: renormalised); 0 where `valid`
    is false or the pass has no direction."""
    n = _times(np.nan_to_num(np.asarray(normal_world, np.float64)), c2w[:3, :3])
    length = _length(n)[..., None]
    ok = valid[..., None] & (length > 1e-6)
    return np.where(ok, n / np.where(ok, length, 1.0), 0.0).astype(np.float32)


def optical_flow(depth: np.ndarray, c2w: np.ndarray, depth_next: np.ndarray, c2w_next: np.ndarray, rays: np.ndarray,
                 focal_px: float, tolerance_mm: float, tolerance_rel: float) -> tuple[np.ndarray, np.ndarray]:
    """(flow, seen): flow H x W x 2 float32 (du, dv) pixels from this frame to the next, for every pixel with a
    surface (depth > 0), FLOW_UNKNOWN elsewhere; seen H x W bool: the point lands inside the next frame on a
    pixel with a surface and is not hidden there (at most `tolerance_mm` + `tolerance_rel` of its distance
    behind the farthest surface the next frame shows at the four pixels around its projection: `sequence.flow_visible_*`)."""
    size = depth.shape[0]
    surface = depth > 0
    points = world_points(depth, rays, c2w)
    in_next = _times(points - c2w_next[:3, 3], c2w_next[:3, :3])  # R^T (X - C), row vectors
    u, v = fisheye_project(in_next, focal_px, size)
    grid = np.arange(size, dtype=np.float64)
    flow = np.stack([u - grid[None, :], v - grid[:, None]], axis=-1)
    flow[~surface] = FLOW_UNKNOWN
    # the four pixels around (u, v): seen when each has a surface and the point is not behind all of them
    in_frame = surface & (u >= 0) & (v >= 0) & (u <= size - 1) & (v <= size - 1)
    u0 = np.clip(np.floor(np.where(in_frame, u, 0)).astype(np.int64), 0, size - 2)
    v0 = np.clip(np.floor(np.where(in_frame, v, 0)).astype(np.int64), 0, size - 2)
    around = np.stack([depth_next[v0, u0], depth_next[v0, u0 + 1], depth_next[v0 + 1, u0], depth_next[v0 + 1, u0 + 1]])
    distance = _length(in_next)
    seen = (in_frame & (around.min(axis=0) > 0)
            & (distance <= around.max(axis=0) * (1 + tolerance_rel) + tolerance_mm))
    return flow.astype(np.float32), seen


# ------------------------------------------------------------------------------------- files
def flo_bytes(flow: np.ndarray) -> bytes:
    """Middlebury .flo: float32 202021.25 ('PIEH'), int32 width, int32 height, then H x W x 2 float32 (u, v)
    row by row, little-endian."""
    height, width = flow.shape[:2]
    return struct.pack("<fii", FLO_MAGIC, width, height) + np.ascontiguousarray(flow, "<f4").tobytes()


def read_flo(path: str | Path) -> np.ndarray:
    """H x W x 2 float32 flow of a Middlebury .flo file."""
    data = Path(path).read_bytes()
    magic, width, height = struct.unpack_from("<fii", data)
    if magic != FLO_MAGIC:
        raise ValueError(f"{path}: not a .flo file")
    return np.frombuffer(data, "<f4", count=width * height * 2, offset=12).reshape(height, width, 2).copy()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def gif_bytes(frames: list[np.ndarray], fps: float) -> bytes:
    """An endlessly looping GIF of H x W x 3 uint8 frames at `fps` (fixed palette choice: same frames, same
    bytes)."""
    import io

    from PIL import Image

    images = [Image.fromarray(f).quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
              for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, int(round(1000.0 / float(fps)))), optimize=False, disposal=1)
    return buf.getvalue()
