"""Hard negatives: bubbles and foam, stool and debris fragments, a pool of fluid on the lumen's floor. Frames
with and without a lesion show them alike (their parameters never depend on the lesion's). Object index 0:
never part of a lesion mask, but they may hide part of a lesion (the mask is what stays visible).

Placed once per scene from the camera's pose: clusters where a ray from the lens lands on the wall, the pool
along the floor ahead of the camera; a sequence's frames see the same clutter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from synthmed.render.lumen import centreline
from synthmed.render.nodes import (
    NodeGraph,
    NodeInputs,
    hsv_colour,
    material_output,
    mesh_in_order,
    new_geometry_tree,
    new_material,
    rotate,
    shifted_colour,
    unit,
)


class Clutter:
    """Up to `shader.clutter_max_bubbles` bubbles, `shader.clutter_max_debris` debris fragments and one fluid
    surface, hidden until placed."""

    def __init__(self, bpy, scene, cfg: Mapping) -> None:
        self.bpy, self.cfg = bpy, cfg
        shader = cfg["shader"]
        self.bubble_material = self._bubble_material()
        self.debris_material, debris_graph = new_material(bpy, "debris")
        self.debris_inputs = NodeInputs(debris_graph)
        self._build_debris_material(debris_graph)
        self.fluid_material, fluid_graph = new_material(bpy, "fluid")
        self.fluid_inputs = NodeInputs(fluid_graph)
        self._build_fluid_material(fluid_graph)
        shape_tree = new_geometry_tree(bpy, "DebrisShape")
        shape_graph = NodeGraph(shape_tree)
        self.shape_inputs = NodeInputs(shape_graph)
        self._build_debris_shape(shape_graph)
        self.bubbles = [self._sphere(scene, f"bubble{k}", self.bubble_material, 16, 8)
                        for k in range(int(shader["clutter_max_bubbles"]))]
        for bubble in self.bubbles:
            bubble.visible_shadow = False  # a see-through film casts no shadow worth its noise
        self.debris = [self._sphere(scene, f"debris{k}", self.debris_material, 12, 6, shape_tree)
                       for k in range(int(shader["clutter_max_debris"]))]
        self.fluid = self._plane(scene)

    # ------------------------------------------------------------------------------ materials and meshes
    def _bubble_material(self):
        """Clear where the bubble faces the lens; toward its rim (Fresnel) a thin film lit as if it faced the lens,
        so the rim is bright where the wall round it is lit and fades with the tip light's distance (direct light
        only: a mirror rim would reflect the dark lumen, a black ring); a glossy coat adds the light's glint."""
        shader = self.cfg["shader"]
        material, graph = new_material(self.bpy, "bubble")
        fresnel = graph.node("ShaderNodeFresnel", {"IOR": float(shader["bubble_ior"])}).outputs[0]
        film = graph.node("ShaderNodeBsdfDiffuse", {"Color": (*(float(shader["bubble_film"]),) * 3, 1.0),
                                                    "Normal": graph.node("ShaderNodeNewGeometry").outputs["Incoming"]})
        glossy = graph.node("ShaderNodeBsdfGlossy", {"Color": (1.0, 1.0, 1.0, 1.0),
                                                     "Roughness": float(shader["bubble_roughness"])})
        clear = graph.node("ShaderNodeBsdfTransparent", {"Color": (1.0, 1.0, 1.0, 1.0)})
        rim = graph.math("MINIMUM", graph.math("MULTIPLY", fresnel, float(shader["bubble_rim_gain"])), 1.0)
        body = graph.node("ShaderNodeMixShader", {0: rim, 1: clear.outputs[0], 2: film.outputs[0]})
        coated = graph.node("ShaderNodeAddShader", {0: body.outputs[0], 1: glossy.outputs[0]})
        material_output(graph, coated.outputs[0], opaque=False)
        return material

    def _build_debris_material(self, graph: NodeGraph) -> None:
        shader, knob = self.cfg["shader"], self.debris_inputs
        coordinates = graph.node("ShaderNodeTexCoord").outputs["Object"]
        noise = graph.noise(graph.seeded(coordinates, knob["clutter.seed"]), float(shader["debris_texture_scale"]),
                            float(shader["debris_texture_detail"]))
        low, high = (float(v) for v in shader["debris_mottle_edges"])
        colour = graph.mix_colour(graph.map_range(noise, low, high), knob.rgb("debris.colour"), knob.rgb("debris.colour_dark"))
        bump = graph.node("ShaderNodeBump", {"Strength": float(shader["debris_bump_strength"]),
                                             "Distance": float(shader["debris_bump_distance"]), "Height": noise})
        bsdf = graph.node("ShaderNodeBsdfPrincipled", {"Base Color": colour, "Roughness": float(shader["debris_roughness"]),
                                                       "Normal": bump.outputs[0]})
        material_output(graph, bsdf.outputs[0])

    def _build_fluid_material(self, graph: NodeGraph) -> None:
        """A glossy, tinted, partly see-through surface: the wall shows through it where it is shallow."""
        shader, knob = self.cfg["shader"], self.fluid_inputs
        tinted = graph.node("ShaderNodeBsdfPrincipled", {
            "Base Color": knob.rgb("fluid.colour"), "Roughness": float(shader["fluid_roughness"]),
            "Coat Weight": 1.0, "Coat Roughness": float(shader["fluid_roughness"])})
        clear = graph.node("ShaderNodeBsdfTransparent", {"Color": knob.rgb("fluid.colour")})
        mixed = graph.node("ShaderNodeMixShader", {0: knob["clutter.fluid_opacity"], 1: clear.outputs[0],
                                                   2: tinted.outputs[0]})
        material_output(graph, mixed.outputs[0], opaque=False)

    def _build_debris_shape(self, graph: NodeGraph) -> None:
        """Irregular lumps: a sphere pushed along its normals by a seeded noise."""
        knob, shader = self.shape_inputs, self.cfg["shader"]
        position = graph.node("GeometryNodeInputPosition").outputs[0]
        noise = graph.noise(graph.seeded(position, knob["clutter.seed"]), float(shader["debris_shape_scale"]),
                            float(shader["debris_shape_detail"]))
        # noise 0..1 -> +-lumpiness / 2 of the unit sphere
        amount = graph.math("MULTIPLY", graph.math("SUBTRACT", noise, 0.5), float(shader["debris_lumpiness"]))
        shift = graph.vector_math("SCALE", graph.node("GeometryNodeInputNormal").outputs[0], scale=amount)
        moved = graph.node("GeometryNodeSetPosition", {"Geometry": graph.node("NodeGroupInput").outputs[0], "Offset": shift})
        graph.connect(moved.outputs[0], graph.node("NodeGroupOutput").inputs[0])

    def _sphere(self, scene, name: str, material, u: int, v: int, shape_tree=None):
        import bmesh

        mesh = bmesh.new()
        bmesh.ops.create_uvsphere(mesh, u_segments=u, v_segments=v, radius=1.0)
        data = mesh_in_order(self.bpy, name, mesh)
        mesh.free()
        for polygon in data.polygons:
            polygon.use_smooth = True
        data.materials.append(material)
        obj = self.bpy.data.objects.new(name, data)
        if shape_tree is not None:
            obj.modifiers.new("shape", "NODES").node_group = shape_tree
        obj.hide_render = True
        scene.collection.objects.link(obj)
        return obj

    def _plane(self, scene):
        data = self.bpy.data.meshes.new("fluid")
        data.from_pydata([(-1, 0, -1), (1, 0, -1), (1, 0, 1), (-1, 0, 1)], [], [(0, 1, 2, 3)])
        data.materials.append(self.fluid_material)
        obj = self.bpy.data.objects.new("fluid", data)
        obj.hide_render = True
        scene.collection.objects.link(obj)
        return obj

    # ------------------------------------------------------------------------------ per scene
    def place(self, params: Mapping[str, Any], ray_cast: Callable, camera_position: np.ndarray,
              forward: np.ndarray, up: np.ndarray) -> dict[str, Any]:
        """Hide all clutter, then place this frame's (`params["clutter.*"]`); returns how many of each were
        placed (manifest columns)."""
        for obj in (*self.bubbles, *self.debris, self.fluid):
            obj.hide_render = True
        shader = self.cfg["shader"]
        rng = np.random.default_rng(int(float(params["clutter.seed"]) * 1000))
        view = (camera_position, forward, up, float(params["camera.fov_deg"]))
        placed = {"clutter.bubbles_placed": 0, "clutter.debris_placed": 0, "clutter.fluid_placed": 0}
        if int(params["clutter.bubbles"]):
            largest = float(params["clutter.bubble_radius_mm"])
            radii = largest * rng.uniform(float(shader["bubble_smallest"]), 1.0, int(params["clutter.bubble_count"]))
            placed["clutter.bubbles_placed"] = self._cluster(self.bubbles, radii, params, "bubble", ray_cast, view, rng,
                                                             sink=float(shader["bubble_sink"]), flatten=1.0)
        if int(params["clutter.debris"]):
            self._set_debris_inputs(params)
            size = float(params["clutter.debris_size_mm"])
            radii = size / 2.0 * rng.uniform(float(shader["debris_smallest"]), 1.0, int(params["clutter.debris_count"]))
            placed["clutter.debris_placed"] = self._cluster(self.debris, radii, params, "debris", ray_cast, view, rng,
                                                            sink=float(shader["debris_sink"]),
                                                            flatten=float(shader["debris_flatten"]))
        if int(params["clutter.fluid"]):
            placed["clutter.fluid_placed"] = self._place_fluid(params, camera_position)
        return placed

    def _cluster(self, objects: list, radii: np.ndarray, params: Mapping[str, Any], kind: str, ray_cast: Callable,
                 view: tuple, rng: np.random.Generator, sink: float, flatten: float) -> int:
        """Objects of `radii` around the wall point a ray from the lens hits (`clutter.<kind>_offaxis`,
        `_azimuth_deg`), spread over `clutter.<kind>_spread_mm`, each on the wall it lands on, `sink` of its
        radius inside it; returns how many were placed."""
        from mathutils import Matrix, Vector

        position, forward, up, fov_deg = view
        off_axis = float(params[f"clutter.{kind}_offaxis"]) * math.radians(fov_deg) / 2.0
        azimuth = math.radians(float(params[f"clutter.{kind}_azimuth_deg"]))
        right = unit(np.cross(forward, up))
        hit = ray_cast(position, rotate(forward, right * math.cos(azimuth) + up * math.sin(azimuth), off_axis))
        if hit is None:
            return 0
        centre_point = hit[0]
        spread = float(params[f"clutter.{kind}_spread_mm"])
        aspect = float(self.cfg["shader"]["clutter_min_aspect"])  # objects are this round at least
        count = 0
        for obj, radius in zip(objects, radii, strict=False):
            # a point near the cluster's centre, projected back onto the wall from the lumen's axis
            target = centre_point + rng.normal(0.0, spread / 2.0, 3)
            outward = unit(target - centreline(params, float(target[2])))
            wall = ray_cast(centreline(params, float(target[2])), outward)
            if wall is None:
                continue
            location, normal, _ = wall
            if np.dot(normal, outward) > 0:  # point it into the lumen
                normal = -normal
            normal = unit(normal)
            orientation = Vector(normal.tolist()).to_track_quat("Z", "Y").to_matrix().to_4x4()
            base = location + normal * radius * (1.0 - 2.0 * sink) * flatten
            obj.matrix_world = (Matrix.Translation(base.tolist()) @ orientation
                                @ Matrix.Diagonal((radius, radius * float(rng.uniform(aspect, 1.0)), radius * flatten, 1.0)))
            obj.hide_render = False
            count += 1
        return count

    def _set_debris_inputs(self, params: Mapping[str, Any]) -> None:
        hue, saturation, value = (float(params[f"clutter.debris_{k}"]) for k in ("hue", "saturation", "value"))
        colours = {"debris.colour": hsv_colour(hue, saturation, value),
                   "debris.colour_dark": shifted_colour(hue, saturation, value, self.cfg["shader"]["debris_dark"])}
        self.debris_inputs.set(params, colours)
        self.shape_inputs.set(params, {})

    def _place_fluid(self, params: Mapping[str, Any], camera_position: np.ndarray) -> int:
        """A horizontal surface (world +y is up) across the lumen's floor, from behind the camera onward: the
        wall clips it to a pool whose depth is `clutter.fluid_level` of the radius."""
        from mathutils import Matrix

        start = float(camera_position[2]) - float(self.cfg["shader"]["fluid_behind_mm"])
        length = float(params["clutter.fluid_length_mm"])
        middle = start + length / 2.0
        radius = float(params["tube.radius_mm"])
        floor = min(float(centreline(params, z)[1]) for z in np.linspace(start, start + length, 9)) - radius
        # never above the lens: the scope looks at a pool, not up through its underside
        height = min(floor + float(params["clutter.fluid_level"]) * radius,
                     float(camera_position[1]) - float(self.cfg["shader"]["fluid_lens_clearance_mm"]))
        centre = centreline(params, middle)
        hue, value = float(params["clutter.fluid_hue"]), float(params["clutter.fluid_value"])
        self.fluid_inputs.set(params, {"fluid.colour": hsv_colour(hue, float(self.cfg["shader"]["fluid_saturation"]), value)})
        self.fluid.matrix_world = (Matrix.Translation((float(centre[0]), height, middle))
                                   @ Matrix.Diagonal((radius * 3.0, 1.0, length / 2.0, 1.0)))  # wider than the lumen
        self.fluid.hide_render = False
        return 1
