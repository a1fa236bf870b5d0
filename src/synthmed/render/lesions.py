"""The lesions: three mesh models (sessile and flat domes, a pedunculated stalk and head) sharing one
lobulation node tree and one material, and their placement on the lumen wall per frame.

A lesion's object index is `LESION_INDEX`: the index pass gives its exact, unblended mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from synthmed.render.config import LESION_TYPES
from synthmed.render.lumen import centreline, centreline_frame
from synthmed.render.nodes import (
    NodeGraph,
    NodeInputs,
    hsv_colour,
    new_geometry_tree,
    new_material,
    rotate,
    shifted_colour,
    unit,
)

LESION_INDEX = 1  # object pass index of every lesion (the lumen is 0)


class Lesions:
    """The lesion models (`objects`, one a type, hidden until placed), their shape tree and material."""

    def __init__(self, bpy, scene, cfg: Mapping) -> None:
        self.bpy, self.cfg = bpy, cfg
        tree = new_geometry_tree(bpy, "LesionShape")
        shape_graph = NodeGraph(tree)
        self.shape_inputs = NodeInputs(shape_graph)
        self._build_shape(shape_graph)
        self.material, material_graph = new_material(bpy, "lesion")
        self.material_inputs = NodeInputs(material_graph)
        self._build_material(material_graph)
        self.objects = {kind: self._model(scene, kind, tree) for kind in LESION_TYPES}

    def _build_shape(self, graph: NodeGraph) -> None:
        """Lobulation: the upper half of the model pushed along its normals by a seeded noise."""
        shader, knob = self.cfg["shader"], self.shape_inputs
        group_in, group_out = graph.node("NodeGroupInput"), graph.node("NodeGroupOutput")
        position = graph.node("GeometryNodeInputPosition").outputs[0]
        noise = graph.noise(graph.seeded(position, knob["lesion.seed"]), float(shader["lesion_shape_noise_scale"]),
                            float(shader["lesion_shape_noise_detail"]))
        # noise 0..1 -> +-lobulation
        amount = graph.math("MULTIPLY", graph.math("SUBTRACT", noise, 0.5), graph.math("MULTIPLY", knob["lesion.lobulation"], 2.0))
        above_wall = graph.math("GREATER_THAN", graph.node("ShaderNodeSeparateXYZ", {0: position}).outputs[2], 0.0)
        shift = graph.vector_math("SCALE", graph.node("GeometryNodeInputNormal").outputs[0],
                                  scale=graph.math("MULTIPLY", amount, above_wall))
        moved = graph.node("GeometryNodeSetPosition", {"Geometry": group_in.outputs[0], "Offset": shift})
        smooth = graph.node("GeometryNodeSetShadeSmooth", {"Mesh": moved.outputs[0], "Shade Smooth": True})
        graph.connect(smooth.outputs[0], group_out.inputs[0])

    def _build_material(self, graph: NodeGraph) -> None:
        shader, knob = self.cfg["shader"], self.material_inputs
        coordinates = graph.node("ShaderNodeTexCoord").outputs["Object"]  # object space: texture scales with the lesion
        noise = graph.noise(graph.seeded(coordinates, knob["lesion.seed"]), knob["lesion.texture_scale_obj"],
                            float(shader["lesion_noise_detail"]), Roughness=float(shader["lesion_noise_roughness"]))
        low, high = (float(v) for v in shader["lesion_mottle_edges"])
        mottle = graph.math("MULTIPLY", graph.map_range(noise, low, high),
                            graph.math("MULTIPLY", knob["lesion.texture_strength"], float(shader["lesion_mottle_gain"])))
        colour = graph.mix_colour(mottle, knob.rgb("lesion.colour"), knob.rgb("lesion.colour_dark"))
        bump = graph.node("ShaderNodeBump", {
            "Strength": graph.math("MULTIPLY", knob["lesion.texture_strength"], float(shader["lesion_bump_gain"])),
            "Distance": float(shader["lesion_bump_distance"]), "Height": noise})
        bsdf = graph.node("ShaderNodeBsdfPrincipled", {
            "Base Color": colour, "Roughness": float(shader["lesion_roughness"]), "Normal": bump.outputs[0],
            "Coat Weight": float(shader["lesion_coat_weight"]), "Coat Roughness": float(shader["lesion_coat_roughness"]),
            "Coat IOR": float(shader["lesion_coat_ior"]), "Coat Normal": bump.outputs[0],
        })
        graph.connect(bsdf.outputs[0], graph.node("ShaderNodeOutputMaterial").inputs["Surface"])

    def _model(self, scene, kind: str, shape_tree):
        """The mesh of one lesion type in a unit frame (z = 0 at the wall, z = 1 at the top)."""
        import bmesh
        from mathutils import Matrix

        bpy, shader = self.bpy, self.cfg["shader"]
        segments = int(self.cfg["scene"]["lesion_segments"])
        mesh = bmesh.new()
        if kind == "pedunculated":  # width 1, height 1: a stalk, then a round head
            bmesh.ops.create_cone(mesh, cap_ends=True, segments=segments // 2, radius1=float(shader["stalk_radius_wall"]),
                                  radius2=float(shader["stalk_radius_head"]), depth=float(shader["stalk_length"]),
                                  matrix=Matrix.Translation((0, 0, float(shader["stalk_centre"]))))
            bmesh.ops.create_uvsphere(mesh, u_segments=segments, v_segments=segments // 2,
                                      radius=float(shader["head_radius"]),
                                      matrix=Matrix.Translation((0, 0, float(shader["head_centre"]))))
        else:  # a unit sphere: a dome once scaled (its lower half sits inside the wall)
            bmesh.ops.create_uvsphere(mesh, u_segments=segments, v_segments=segments // 2, radius=1.0)
        data = bpy.data.meshes.new(f"lesion_{kind}")
        mesh.to_mesh(data)
        mesh.free()
        data.materials.append(self.material)
        lesion = bpy.data.objects.new(f"lesion_{kind}", data)
        lesion.pass_index = LESION_INDEX
        lesion.modifiers.new("shape", "NODES").node_group = shape_tree
        lesion.hide_render = True
        scene.collection.objects.link(lesion)
        return lesion

    # -------------------------------------------------------------------------- per frame
    def pose(self, params: Mapping[str, Any]) -> None:
        """Hide every lesion and set the shape and material inputs of this frame's lesion."""
        hue, saturation, value = params["lesion.hue"], params["lesion.saturation"], params["lesion.value"]
        colours = {"lesion.colour": hsv_colour(hue, saturation, value),
                   "lesion.colour_dark": shifted_colour(hue, saturation, value, self.cfg["shader"]["lesion_dark"])}
        # the texture's scale is per mm, the material's coordinates are the model's unit frame
        values = {**params, "lesion.texture_scale_obj": float(params["lesion.texture_scale"]) * float(params["lesion.size_mm"])}
        self.material_inputs.set(values, colours)
        self.shape_inputs.set(params, {})
        for lesion in self.objects.values():
            lesion.hide_render = True

    def place(self, params: Mapping[str, Any], ray_cast: Callable, camera_position: np.ndarray, forward: np.ndarray,
              up: np.ndarray) -> dict[str, Any]:
        """Put this frame's lesion on the wall (`ray_cast(origin, direction)` finds it); return the derived
        values (`lesion.placed`, `lesion.distance_mm`). A ray that misses the wall places nothing."""
        from mathutils import Matrix, Vector

        if params["lesion.placement"] == "view":
            # a ray from the lens, inside (or just outside) the field of view: the lesion sits where it lands
            off_axis = float(params["lesion.view_offaxis"]) * (math.radians(float(params["camera.fov_deg"])) / 2.0)
            azimuth = math.radians(float(params["lesion.view_azimuth_deg"]))
            right = unit(np.cross(forward, up))
            hit = ray_cast(camera_position, rotate(forward, right * math.cos(azimuth) + up * math.sin(azimuth), off_axis))
        elif params["lesion.placement"] == "axial":
            centre, tangent, side = centreline_frame(params, float(params["lesion.axial_mm"]))
            angle = math.radians(float(params["lesion.angle_deg"]))
            hit = ray_cast(centre, side * math.cos(angle) + np.cross(side, tangent) * math.sin(angle))
        else:
            raise ValueError(f"render.params.lesion.placement: unknown placement {params['lesion.placement']!r}")
        if hit is None:
            return {"lesion.placed": 0, "lesion.distance_mm": -1.0}
        location, normal, _ = hit
        if np.dot(normal, centreline(params, float(location[2])) - location) < 0:  # point it into the lumen
            normal = -normal
        normal = unit(normal)
        lesion = self.objects[params["lesion.type"]]
        size, height = float(params["lesion.size_mm"]), float(params["lesion.height_mm"])
        # the pedunculated model is 1 wide; the domes are unit spheres (2 wide)
        scale = (size, size, height) if params["lesion.type"] == "pedunculated" else (size / 2.0, size / 2.0, height)
        tilt_axis = rotate(unit(np.cross(normal, [0.0, 0.0, 1.0])) if abs(normal[2]) < 0.99 else np.array([1.0, 0, 0]),
                           normal, math.radians(float(params["lesion.tilt_azimuth_deg"])))
        axis = rotate(normal, tilt_axis, math.radians(float(params["lesion.tilt_deg"])))
        orientation = Vector(axis.tolist()).to_track_quat("Z", "Y")
        spin = Matrix.Rotation(math.radians(float(params["lesion.spin_deg"])), 4, "Z")
        base = location - normal * float(self.cfg["scene"]["lesion_sink_mm"])  # never floats above the wall
        lesion.matrix_world = (Matrix.Translation(base.tolist()) @ orientation.to_matrix().to_4x4() @ spin
                               @ Matrix.Diagonal((*scale, 1.0)))
        lesion.hide_render = False
        return {"lesion.placed": 1, "lesion.distance_mm": float(np.linalg.norm(location - camera_position))}
