"""The endoscope: an equisolid fisheye camera and the light on its tip, posed in the lumen per frame; and the
fisheye model in numpy (pixel rays, projection, intrinsics, camera-to-world) that the sequence passes use.

Camera frames. Blender's camera looks down its -Z axis with +Y up. The numpy functions here use the OpenCV
convention instead: x right, y down (image rows), z forward along the optical axis. Pixel coordinates are
(u, v) = (column, row) with the centre of pixel (0, 0) at (0, 0), so the principal point of an S x S frame
is ((S - 1) / 2, (S - 1) / 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from synthmed.render.lumen import centreline_frame
from synthmed.render.nodes import light_tint, rotate, unit


class Endoscope:
    """The camera (`camera`) and the tip light (`light`)."""

    def __init__(self, bpy, scene, cfg: Mapping) -> None:
        self.cfg = cfg
        geometry, optics = cfg["scene"], cfg["endoscope"]
        camera_data = bpy.data.cameras.new("endoscope")
        camera_data.type = "PANO"
        camera_data.panorama_type = "FISHEYE_EQUISOLID"
        camera_data.sensor_fit = "HORIZONTAL"
        camera_data.sensor_width = float(optics["sensor_width_mm"])
        camera_data.clip_start = float(geometry["near_clip_mm"])
        camera_data.clip_end = float(geometry["far_clip_mm"])
        self.camera = bpy.data.objects.new("endoscope", camera_data)
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera
        light_data = bpy.data.lights.new("tip_light", "POINT")
        light_data.shadow_soft_size = float(optics["light_soft_radius_mm"])
        self.light = bpy.data.objects.new("tip_light", light_data)
        scene.collection.objects.link(self.light)

    def pose(self, params: Mapping[str, Any], ray_cast: Callable) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Place the camera (off the centreline as far as the wall allows, then yawed, pitched, rolled), set
        its field of view, and put the light on the tip. Returns (position, forward, up, offset from the
        centreline in mm); `ray_cast(origin, direction)` finds the wall."""
        position, right, up, forward, offset = self._aim(params, ray_cast)
        self.place(params, position, right, up, forward)
        return position, forward, up, offset

    def _aim(self, params: Mapping[str, Any], ray_cast: Callable):
        """The pose `pose` gives the camera: (position, right, up, forward, offset in mm)."""
        centre, tangent, side = centreline_frame(params, float(params["camera.axial_mm"]))
        return scope_pose(params, self.cfg["scene"], centre, tangent, side, ray_cast,
                          light_offset_mm=float(self.cfg["endoscope"]["light_offset_mm"]))

    def place(self, params: Mapping[str, Any], position: np.ndarray, right: np.ndarray, up: np.ndarray,
              forward: np.ndarray) -> None:
        """Put the camera at `position` with the orthonormal axes `right`, `up` (the image's) and `forward` (the
        optical axis), set its field of view from the frame's parameters, and put the light on the tip."""
        from mathutils import Matrix

        cfg = self.cfg
        rotation = Matrix([[right[i], up[i], -forward[i]] for i in range(3)])  # camera looks down -Z, +Y up
        self.camera.matrix_world = Matrix.Translation(position.tolist()) @ rotation.to_4x4()
        # equisolid fisheye: r = 2 f sin(theta / 2); fov spans the frame width
        fov = math.radians(float(params["camera.fov_deg"]))
        lens = self.camera.data
        lens.fisheye_lens = float(lens.sensor_width) / (4.0 * math.sin(fov / 4.0))
        # trace only the pixels inside the scope's border (black outside anyway): r = rho * half width
        # <=> sin(theta / 2) = rho * sin(fov / 4); two pixels of margin
        if params["endoscope.border"] == "circle":
            rho = float(params["endoscope.border_radius"])
        else:
            rho = math.hypot(1.0, 1.0 - 2.0 * float(cfg["endoscope"]["octagon_cut"]))
        rho += 4.0 / float(cfg["resolution"])
        lens.fisheye_fov = min(math.radians(359.0), 4.0 * math.asin(min(1.0, rho * math.sin(fov / 4.0))))
        self._pose_light(params, position, up)

    def _pose_light(self, params: Mapping[str, Any], position: np.ndarray, up: np.ndarray) -> None:
        """The light sits slightly above the lens; warmth tints it toward yellow."""
        optics, tint = self.cfg["endoscope"], self.cfg["shader"]["light_warmth_tint"]
        self.light.location = (position + up * float(optics["light_offset_mm"])).tolist()
        self.light.data.color = light_tint(params["light.warmth"], tint)
        self.light.data.energy = float(params["light.power_w"]) * float(optics["light_power_scale"])


def scope_pose(params: Mapping[str, Any], scene: Mapping[str, Any], centre: np.ndarray, tangent: np.ndarray,
               side: np.ndarray, ray_cast: Callable, shift_mm: np.ndarray | None = None, turn_deg: tuple = (0.0, 0.0),
               roll_deg: float = 0.0, light_offset_mm: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """The scope's pose at the centreline point `centre` (its `tangent` and `side` axes), for a still frame and for
    each frame of a sequence: (position, right, up, forward, offset from the centreline in mm).

    The scope is moved off the centreline by camera.offset x tube.radius_mm toward camera.offset_angle_deg (plus
    `shift_mm`, a sequence's shake), never closer to the wall than `scene.min_wall_clearance_mm`
    (`ray_cast(origin, direction)` finds the wall). It looks along the tangent turned camera.toward_wall_deg
    toward that wall, then yawed and pitched (camera.yaw_deg / pitch_deg plus `turn_deg`) and rolled
    (camera.roll_deg plus `roll_deg`). A scope turned toward the wall is moved back toward the centreline until the
    wall straight ahead is `scene.min_view_distance_mm` away. The light sits `light_offset_mm` above the lens
    (image up): a scope whose light would lie in the wall (a fold's ridge beside the lens, the scope rolled toward
    the wall: a black frame) is moved back toward the centreline too."""
    up_axis = np.cross(side, tangent)
    angle = math.radians(float(params["camera.offset_angle_deg"]))
    direction = side * math.cos(angle) + up_axis * math.sin(angle)
    wanted = float(params["camera.offset"]) * float(params["tube.radius_mm"])
    away, distance = direction, wanted
    if shift_mm is not None:
        shifted = direction * wanted + shift_mm
        distance = float(np.linalg.norm(shifted))
        away = shifted / distance if distance > 0 else direction
    hit = ray_cast(centre, away)
    room = (hit[2] if hit else distance + 1e3) - float(scene["min_wall_clearance_mm"])
    offset = max(0.0, min(distance, room))
    axis = toward_wall(tangent, direction, float(params["camera.toward_wall_deg"]))
    forward = rotate(axis, up_axis, math.radians(float(params["camera.yaw_deg"]) + turn_deg[0]))
    forward = rotate(forward, side, math.radians(float(params["camera.pitch_deg"]) + turn_deg[1]))
    if float(params["camera.toward_wall_deg"]) > 0:  # the wall ahead kept out of the near clip
        offset = keep_wall_away(centre, away, offset, forward, ray_cast, float(scene["min_view_distance_mm"]))
    right = unit(np.cross(forward, up_axis))
    up = unit(np.cross(right, forward))
    roll = math.radians(float(params["camera.roll_deg"]) + roll_deg)
    right, up = rotate(right, forward, roll), rotate(up, forward, roll)
    if light_offset_mm > 0:  # the light at least 1 mm inside the wall
        offset = keep_wall_away(centre, away, offset, up, ray_cast, light_offset_mm + 1.0)
    position = centre + away * offset
    return position, right, up, forward, offset


# ------------------------------------------------------------------------------ the fisheye model in numpy
def toward_wall(tangent: np.ndarray, direction: np.ndarray, degrees: float) -> np.ndarray:
    """The lumen's axis `tangent` turned by `degrees` toward `direction` (perpendicular to it: the side of the
    wall the scope is moved to): 0 looks down the lumen, 90 straight at that wall."""
    if not degrees:
        return tangent
    return unit(rotate(tangent, np.cross(tangent, direction), math.radians(degrees)))


def keep_wall_away(centre: np.ndarray, direction: np.ndarray, offset: float, look: np.ndarray, ray_cast: Callable,
                   minimum: float) -> float:
    """The offset (mm, from `centre` along `direction`), shrunk in steps of 0.6x (at most 8), at which the wall
    along `look` from the lens lies at least `minimum` mm away. Straight ahead: a scope turned toward a near wall,
    or into a fold's ridge, would otherwise have the wall inside the near clip and see through it. Toward the
    tip light: a light in the wall lights nothing (a black frame)."""
    for _ in range(8):
        hit = ray_cast(centre + direction * offset, look)
        if hit is None or hit[2] >= minimum or offset <= 0:
            break
        offset *= 0.6
    return offset


def fisheye_focal_px(fov_deg: float, size: int) -> float:
    """Focal length in pixels of the equisolid fisheye (r = 2 f sin(theta / 2)) whose field of view `fov_deg`
    spans the `size` pixels of the frame's width (what `Endoscope.place` gives Blender's camera)."""
    return float(size) / (4.0 * math.sin(math.radians(float(fov_deg)) / 4.0))


def fisheye_intrinsics(fov_deg: float, size: int) -> dict[str, Any]:
    """The intrinsics of an S x S frame: model, focal length f (pixels), principal point (cx, cy) in pixel
    coordinates (centre of pixel (0, 0) at (0, 0)), field of view across the width, frame size."""
    centre = (float(size) - 1.0) / 2.0
    return {"model": "equisolid", "f_px": fisheye_focal_px(fov_deg, size), "cx": centre, "cy": centre,
            "fov_deg": float(fov_deg), "width": int(size), "height": int(size)}


def fisheye_rays(size: int, focal_px: float) -> np.ndarray:
    """S x S x 3 unit ray directions through the pixel centres, in the camera frame (OpenCV axes). Pixels past
    180 degrees off axis (r > 2 f) get NaN."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    v, u = np.meshgrid(offsets, offsets, indexing="ij")
    radius = np.hypot(u, v)
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = 2.0 * np.arcsin(radius / (2.0 * focal_px))
        scale = np.where(radius > 0, np.sin(theta) / np.maximum(radius, 1e-300), 0.0)
    return np.stack([u * scale, v * scale, np.cos(theta)], axis=-1)


def fisheye_project(points: np.ndarray, focal_px: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) of camera-frame points (..., 3), OpenCV axes; any angle off axis projects
    (theta = 180 degrees lands on the circle r = 2 f)."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    lateral = np.hypot(x, y)
    theta = np.arctan2(lateral, z)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(lateral > 0, 2.0 * focal_px * np.sin(theta / 2.0) / np.maximum(lateral, 1e-300), 0.0)
    centre = (size - 1) / 2.0
    return centre + x * scale, centre + y * scale


def camera_to_world(position: np.ndarray, right: np.ndarray, up: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """The 4 x 4 camera-to-world matrix (mm) of a camera with image axes `right`, `up` and optical axis
    `forward`, in the OpenCV convention: its columns are x = right, y = down (-up), z = forward, position."""
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2], matrix[:3, 3] = right, -np.asarray(up), forward, position
    return matrix
