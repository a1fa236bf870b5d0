"""The endoscope: an equisolid fisheye camera and the light on its tip, posed in the lumen per frame."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from synthmed.render.lumen import centreline_frame
from synthmed.render.nodes import rotate, unit


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
        from mathutils import Matrix

        cfg = self.cfg
        centre, tangent, side = centreline_frame(params, float(params["camera.axial_mm"]))
        up_axis = np.cross(side, tangent)
        angle = math.radians(float(params["camera.offset_angle_deg"]))
        direction = side * math.cos(angle) + up_axis * math.sin(angle)
        wanted = float(params["camera.offset"]) * float(params["tube.radius_mm"])
        hit = ray_cast(centre, direction)
        room = (hit[2] if hit else wanted + 1e3) - float(cfg["scene"]["min_wall_clearance_mm"])
        offset = max(0.0, min(wanted, room))
        position = centre + direction * offset
        forward = rotate(tangent, up_axis, math.radians(float(params["camera.yaw_deg"])))
        forward = rotate(forward, side, math.radians(float(params["camera.pitch_deg"])))
        right = unit(np.cross(forward, up_axis))
        up = unit(np.cross(right, forward))
        roll = math.radians(float(params["camera.roll_deg"]))
        right, up = rotate(right, forward, roll), rotate(up, forward, roll)
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
        return position, forward, up, offset

    def _pose_light(self, params: Mapping[str, Any], position: np.ndarray, up: np.ndarray) -> None:
        """The light sits slightly above the lens; warmth tints it toward yellow."""
        optics, tint = self.cfg["endoscope"], self.cfg["shader"]["light_warmth_tint"]
        self.light.location = (position + up * float(optics["light_offset_mm"])).tolist()
        warmth = float(params["light.warmth"])
        self.light.data.color = tuple(1.0 - float(t) * warmth for t in tint)
        self.light.data.energy = float(params["light.power_w"]) * float(optics["light_power_scale"])
