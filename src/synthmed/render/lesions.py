"""The lesions: one mesh model per Paris class (a pedunculated stalk and head; sessile, flat-elevated, flat and
depressed domes) sharing one shape node tree (lobes, plateau, central depression) and one material (colour
relative to the mucosa over the wall's own pattern, which runs on over the lesion; red stippling; surface
pattern: pits, villous ridges or vessels, a mucus cap), and their placement on the lumen wall per frame (in view, or just
behind a fold that hides part of it).

A lesion's object index is `LESION_INDEX`: the index pass gives its exact, unblended mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from synthmed.render.config import LESION_SURFACES, LESION_TYPES
from synthmed.render.lumen import centreline, centreline_frame
from synthmed.render.mucosa import droplet_bump, groove_bump, wall_colour
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
    shifted_toward,
    unit,
)
from synthmed.render.pattern import wall_pattern

LESION_INDEX = 1  # object pass index of every lesion (the lumen is 0)
# where the lesion's foot reads the wall's pattern (`Lesions.place` sets it): nothing until it is placed
WALL_ANGLE_UNSET = {"lesion.wall_angle_x": 0.0, "lesion.wall_angle_y": 0.0, "lesion.wall_angle_z": 0.0,
                    "lesion.wall_angle_offset": 0.0}


class Lesions:
    """The lesion models (`objects`, one a type, hidden until placed), their shape tree and material."""

    def __init__(self, bpy, scene, cfg: Mapping, mucosa, lumen) -> None:
        self.bpy, self.cfg, self.mucosa, self.lumen = bpy, cfg, mucosa, lumen
        tree = new_geometry_tree(bpy, "LesionShape")
        shape_graph = NodeGraph(tree)
        self.shape_inputs = NodeInputs(shape_graph)
        self._build_shape(shape_graph)
        self.material, material_graph = new_material(bpy, "lesion")
        self.material_inputs = NodeInputs(material_graph)
        self._build_material(material_graph)
        self.objects = {kind: self._model(scene, kind, tree) for kind in LESION_TYPES}

    def _build_shape(self, graph: NodeGraph) -> None:
        """The model's upper half (z > 0, unit frame): its top flattened (z -> z ** plateau_power), its centre
        sunk (depressed lesions: by `depression` x (1 - r^2 / rim^2)^2 inside the rim), then pushed along its
        normals by a seeded noise (lobes: `lobe_scale` noise cells per unit, +-`lobulation`). A multi-lobed model
        (`lobes` > 0) is subdivided first and creased along the edges of Voronoi cells (`lobe_cells` per unit)."""
        shader, knob = self.cfg["shader"], self.shape_inputs
        group_in, group_out = graph.node("NodeGroupInput"), graph.node("NodeGroupOutput")
        position = graph.node("GeometryNodeInputPosition").outputs[0]
        xyz = graph.node("ShaderNodeSeparateXYZ", {0: position})
        x, y, z = xyz.outputs[0], xyz.outputs[1], xyz.outputs[2]
        above_wall = graph.math("GREATER_THAN", z, 0.0)
        r2 = graph.math("ADD", graph.math("MULTIPLY", x, x), graph.math("MULTIPLY", y, y))
        flat_top = graph.math("POWER", graph.math("MAXIMUM", z, 0.0), knob["lesion.plateau_power"])
        inside_rim = graph.math("MAXIMUM", graph.math("SUBTRACT", 1.0, graph.math(
            "DIVIDE", r2, float(shader["lesion_depression_rim"]) ** 2)), 0.0)
        sink = graph.math("MULTIPLY", knob["lesion.depression"], graph.math("MULTIPLY", inside_rim, inside_rim))
        top = graph.math("SUBTRACT", flat_top, sink)
        new_z = graph.math("ADD", graph.math("MULTIPLY", top, above_wall),
                           graph.math("MULTIPLY", z, graph.math("SUBTRACT", 1.0, above_wall)))
        # multi-lobed (`lobes` > 0): the mesh subdivided, then creased along the edges of a Voronoi field of
        # `lobe_cells` cells per unit, so the surface parts into rounded lobes; 0 leaves the mesh as it is
        finer = graph.node("GeometryNodeSubdivideMesh", {"Mesh": group_in.outputs[0], "Level": knob["lesion.lobe_level"]})
        reshaped = graph.node("GeometryNodeSetPosition", {
            "Geometry": finer.outputs[0], "Position": graph.node("ShaderNodeCombineXYZ", {0: x, 1: y, 2: new_z})})
        seeded = graph.seeded(position, knob["lesion.seed"])
        cells = graph.node("ShaderNodeTexVoronoi", {"Vector": seeded, "Scale": knob["lesion.lobe_cells"],
                                                    "Randomness": float(shader["lesion_lobe_randomness"])},
                           voronoi_dimensions="3D", feature="DISTANCE_TO_EDGE")
        inside = graph.math("SUBTRACT", 1.0, graph.math("MINIMUM", graph.math(
            "DIVIDE", cells.outputs["Distance"], float(shader["lesion_lobe_crease"])), 1.0))
        crease = graph.math("MULTIPLY", graph.math("MULTIPLY", inside, inside), graph.math("MULTIPLY", knob["lesion.lobes"], -1.0))
        creased = graph.node("GeometryNodeSetPosition", {
            "Geometry": reshaped.outputs[0],
            "Offset": graph.vector_math("SCALE", graph.node("GeometryNodeInputNormal").outputs[0],
                                        scale=graph.math("MULTIPLY", crease, above_wall))})
        noise = graph.noise(seeded, knob["lesion.lobe_scale"],
                            float(shader["lesion_shape_noise_detail"]))
        # noise 0..1 -> +-lobulation
        amount = graph.math("MULTIPLY", graph.math("SUBTRACT", noise, 0.5), graph.math("MULTIPLY", knob["lesion.lobulation"], 2.0))
        shift = graph.vector_math("SCALE", graph.node("GeometryNodeInputNormal").outputs[0],
                                  scale=graph.math("MULTIPLY", amount, above_wall))
        moved = graph.node("GeometryNodeSetPosition", {"Geometry": creased.outputs[0], "Offset": shift})
        smooth = graph.node("GeometryNodeSetShadeSmooth", {"Mesh": moved.outputs[0], "Shade Smooth": True})
        graph.connect(smooth.outputs[0], group_out.inputs[0])

    def _build_material(self, graph: NodeGraph) -> None:
        """Mottled lesion colour over the wall's pattern; red stippling (dots of a world-space Voronoi field);
        nodules (small domes of another, their crevices darker); a surface pattern (pits: dots of a Voronoi field;
        villous: its cell edges as ridges; vascular: fine red lines), each weighted per frame; a pale mucus cap over
        the top."""
        shader, knob = self.cfg["shader"], self.material_inputs
        coordinates = graph.node("ShaderNodeTexCoord").outputs["Object"]  # object space: texture scales with the lesion
        seeded = graph.seeded(coordinates, knob["lesion.seed"])
        noise = graph.noise(seeded, knob["lesion.texture_scale_obj"],
                            float(shader["lesion_noise_detail"]), Roughness=float(shader["lesion_noise_roughness"]))
        low, high = (float(v) for v in shader["lesion_mottle_edges"])
        mottle = graph.math("MULTIPLY", graph.map_range(noise, low, high),
                            graph.math("MULTIPLY", knob["lesion.texture_strength"], float(shader["lesion_mottle_gain"])))
        # the mucosa covers the lesion: the wall's pattern (its mottle, vessels and capillary net, read where the
        # wall around the foot reads it: the angle around the lumen a linear map of world position, set where the
        # lesion is placed, `LumenGeometry.angle_map`) runs on over it, tinted by lesion colour / mucosa colour,
        # by `lesion.wall_pattern` (0: the lesion's own flat colour, as before version 18)
        position = graph.node("ShaderNodeNewGeometry").outputs["Position"]
        gradient = graph.node("ShaderNodeCombineXYZ", {i: knob[f"lesion.wall_angle_{axis}"]
                                                       for i, axis in enumerate("xyz")}).outputs[0]
        angle = graph.math("ADD", graph.vector_math("DOT_PRODUCT", gradient, position), knob["lesion.wall_angle_offset"])
        channels = wall_pattern(graph, angle, graph.node("ShaderNodeSeparateXYZ", {0: position}).outputs[2], knob,
                                self.mucosa.pattern_images, self.cfg)
        wall = wall_colour(graph, channels, knob, self.cfg)
        tinted = graph.socket(graph.node("ShaderNodeMix", {"Factor_Float": 1.0, "A_Color": wall,
                                                           "B_Color": knob.rgb("lesion.wall_tint")},
                                         data_type="RGBA", blend_type="MULTIPLY").outputs, "Result_Color")
        colour = graph.mix_colour(knob["lesion.wall_pattern"], knob.rgb("lesion.colour"), tinted)
        colour = graph.mix_colour(mottle, colour, knob.rgb("lesion.colour_dark"))
        # stippling: the fine red dots over an adenoma (the capillaries round its crypt openings), a Voronoi field of
        # `lesion.stipple_scale` cells per mm in world space (one size on every model); a dot in
        # `lesion_stipple_fill` of the cells, its radius `lesion_stipple_radius` x 0.6-1.4 by cell
        dots = graph.node("ShaderNodeTexVoronoi", {"Vector": graph.seeded(position, knob["lesion.seed"]),
                                                   "Scale": knob["lesion.stipple_scale"], "Randomness": 1.0},
                          voronoi_dimensions="3D", feature="F1")
        cell = graph.node("ShaderNodeSeparateColor", {0: dots.outputs["Color"]}).outputs
        radius = graph.math("MULTIPLY", graph.math("MULTIPLY_ADD", cell[1], 0.8, 0.6), float(shader["lesion_stipple_radius"]))
        dot = graph.math("MULTIPLY", graph.map_range(dots.outputs["Distance"], radius, 0.0, 0.0, 1.0, "SMOOTHSTEP"),
                         graph.math("LESS_THAN", cell[0], float(shader["lesion_stipple_fill"])))
        colour = graph.mix_colour(graph.math("MULTIPLY", dot, knob["lesion.stipple"]), colour,
                                  knob.rgb("lesion.stipple_colour"))
        # nodules: an adenoma's granular surface, small domes (1 - (d / r)^2, r = `lesion_nodule_radius` cells) of a
        # world-space Voronoi field of `lesion.nodule_scale` cells per mm, raised by `lesion.nodules`; each catches the
        # tip light (many small glints, not one), the crevices between them darker (`lesion_nodule_darkening`); its
        # seed shifted so that its points are not the stipple's
        grains = graph.node("ShaderNodeTexVoronoi", {
            "Vector": graph.seeded(position, graph.math("ADD", knob["lesion.seed"], 50.0)),
            "Scale": knob["lesion.nodule_scale"], "Randomness": 1.0}, voronoi_dimensions="3D", feature="F1")
        reach = graph.map_range(grains.outputs["Distance"], 0.0, float(shader["lesion_nodule_radius"]))
        nodule = graph.math("SUBTRACT", 1.0, graph.math("MULTIPLY", reach, reach))
        crevice = graph.math("MULTIPLY", graph.math("SUBTRACT", 1.0, nodule),
                             graph.math("MULTIPLY", knob["lesion.nodules"], float(shader["lesion_nodule_darkening"])))
        colour = graph.mix_colour(crevice, colour, knob.rgb("lesion.colour_dark"))
        # the surface pattern: one Voronoi field of cells `pattern_scale_obj` per unit of the model, its lookup
        # warped by a noise of twice the cells' frequency (`lesion_pattern_warp` cells), so cells are not polygons
        warp = graph.node("ShaderNodeTexNoise", {"Vector": seeded, "Scale": graph.math("MULTIPLY", knob["lesion.pattern_scale_obj"], 2.0),
                                                 "Detail": 1.0}, noise_dimensions="3D").outputs["Color"]
        warp = graph.vector_math("SCALE", graph.vector_math("SUBTRACT", warp, (0.5, 0.5, 0.5)), scale=graph.math(
            "DIVIDE", float(shader["lesion_pattern_warp"]), knob["lesion.pattern_scale_obj"]))
        seeded = graph.vector_math("ADD", seeded, warp)
        cells = graph.node("ShaderNodeTexVoronoi", {"Vector": seeded, "Scale": knob["lesion.pattern_scale_obj"],
                                                    "Randomness": float(shader["lesion_pattern_randomness"])},
                           voronoi_dimensions="3D", feature="F1")
        edges = graph.node("ShaderNodeTexVoronoi", {"Vector": seeded, "Scale": knob["lesion.pattern_scale_obj"],
                                                    "Randomness": float(shader["lesion_pattern_randomness"])},
                           voronoi_dimensions="3D", feature="DISTANCE_TO_EDGE")
        pit_radius, ridge_width, vessel_width = (float(shader[k]) for k in
                                                  ("lesion_pit_radius", "lesion_ridge_width", "lesion_vessel_width"))
        pits = graph.math("MULTIPLY", graph.map_range(cells.outputs["Distance"], pit_radius, 0.0, 0.0, 1.0, "SMOOTHSTEP"),
                          knob["lesion.pits"])
        ridges = graph.math("MULTIPLY", graph.map_range(edges.outputs["Distance"], 0.0, ridge_width, 0.0, 1.0,
                                                        "SMOOTHSTEP"), knob["lesion.villous"])
        vessel_lines = graph.math("MULTIPLY", graph.map_range(edges.outputs["Distance"], vessel_width, 0.0, 0.0, 1.0,
                                                              "SMOOTHSTEP"), knob["lesion.vascular"])
        colour = graph.mix_colour(graph.math("MULTIPLY", pits, float(shader["lesion_pit_darkening"])), colour,
                                  knob.rgb("lesion.colour_dark"))
        colour = graph.mix_colour(graph.math("MULTIPLY", graph.math("SUBTRACT", knob["lesion.villous"], ridges),
                                             float(shader["lesion_furrow_darkening"])), colour, knob.rgb("lesion.colour_dark"))
        colour = graph.mix_colour(vessel_lines, colour, knob.rgb("lesion.vessel_colour"))
        # mucus cap: a pale, glossy film over the top of the model (object z), patchy
        z = graph.node("ShaderNodeSeparateXYZ", {0: coordinates}).outputs[2]
        cap_low, cap_high = (float(v) for v in shader["lesion_mucus_edges"])
        patch_low, patch_high = (float(v) for v in shader["lesion_mucus_patch_edges"])
        patchy = graph.map_range(noise, patch_low, patch_high, float(shader["lesion_mucus_patch_floor"]), 1.0)
        cap = graph.math("MULTIPLY", graph.math("MULTIPLY", graph.map_range(z, cap_low, cap_high, 0.0, 1.0, "SMOOTHSTEP"),
                                                patchy), knob["lesion.mucus"])
        # the base: the lesion grows out of the mucosa, so its colour and pattern fade into the wall's (untinted)
        # toward the model's foot (a stalk is the wall's tissue)
        base_low, base_high = (float(v) for v in shader["lesion_base_edges"])
        colour = graph.mix_colour(graph.map_range(z, base_low, base_high, 0.0, 1.0, "SMOOTHSTEP"), wall, colour)
        colour = graph.mix_colour(graph.math("MULTIPLY", cap, float(shader["lesion_mucus_opacity"])), colour,
                                  knob.rgb("lesion.mucus_colour"))
        height = graph.math("ADD", graph.math("ADD", graph.math("MULTIPLY", noise, knob["lesion.texture_strength"]),
                                              graph.math("MULTIPLY", pits, -1.0)), ridges)
        # the wall's fine grooves run on over the lesion (world position: continuous across its foot)
        colour, tissue = groove_bump(graph, position, knob, self.cfg, colour, knob.rgb("lesion.colour_dark"),
                                     patches=channels["relief"])
        bump = graph.node("ShaderNodeBump", {
            "Strength": float(shader["lesion_bump_gain"]),
            "Distance": float(shader["lesion_bump_distance"]), "Height": height, "Normal": tissue})
        bump = graph.node("ShaderNodeBump", {
            "Strength": 1.0, "Distance": graph.math("MULTIPLY", knob["lesion.nodules"], float(shader["lesion_nodule_height"])),
            "Height": nodule, "Normal": bump.outputs[0]})
        # the wall's tissue and wet film (its roughness, sheen, coat and droplets), the mucus cap wetter
        bsdf = graph.node("ShaderNodeBsdfPrincipled", {
            "Base Color": colour, "Roughness": knob["mucosa.roughness"], "Normal": bump.outputs[0],
            "Coat Weight": graph.math("ADD", knob["mucosa.wetness"], cap),
            "Coat Roughness": knob["mucosa.coat_roughness"], "Coat IOR": float(shader["mucosa_coat_ior"]),
            "Coat Normal": droplet_bump(graph, position, knob, self.cfg, normal=bump.outputs[0],
                                        ripple=channels["ripple"]),
            "Specular IOR Level": float(shader["mucosa_specular"]),
        })
        material_output(graph, bsdf.outputs[0])

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
        data = mesh_in_order(bpy, f"lesion_{kind}", mesh)
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
        values, colours = lesion_inputs(params, self.cfg["shader"])
        wall_values, wall_colours = self.mucosa.frame_inputs(params)
        self.material_inputs.set({**wall_values, **values, **WALL_ANGLE_UNSET}, {**wall_colours, **colours})
        self.shape_inputs.set(values, {})
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
        if hit is not None and params["lesion.placement"] == "view" and int(params["lesion.behind_fold"]):
            hit = self._behind_fold(params, ray_cast, hit[0])
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
        # a lens inside (or against) the lesion would see its inside, or a white blur, and a light inside it lights
        # nothing (a black frame): a lesion on the wall right at the scope tip is not placed, as if its ray had
        # missed (the model's unit frame: a dome lies within the unit sphere, the pedunculated model within the
        # sphere of radius 0.5 round (0, 0, 0.5)); the light sits endoscope.light_offset_mm above the lens
        light = np.asarray(camera_position, float) + unit(up) * float(self.cfg["endoscope"]["light_offset_mm"])
        for point in (np.asarray(camera_position, float), light):
            local = np.array(lesion.matrix_world.inverted() @ Vector(point.tolist()))
            if params["lesion.type"] == "pedunculated":
                local = (local - np.array([0.0, 0.0, 0.5])) / 0.5
            if np.linalg.norm(local) < float(self.cfg["shader"]["lesion_lens_clearance"]):
                return {"lesion.placed": 0, "lesion.distance_mm": -1.0}
        gradient, offset = self.lumen.angle_map(location, normal)
        wall_angle = {f"lesion.wall_angle_{axis}": float(g) for axis, g in zip("xyz", gradient, strict=True)}
        self.material_inputs.set_some({**wall_angle, "lesion.wall_angle_offset": offset})
        lesion.hide_render = False
        return {"lesion.placed": 1, "lesion.distance_mm": float(np.linalg.norm(location - camera_position))}

    def _behind_fold(self, params: Mapping[str, Any], ray_cast: Callable, location: np.ndarray):
        """The wall just beyond the next fold ridge from `location` (farther along the lumen, at the same angle
        around it), where the ridge hides part of a lesion from a scope looking down the lumen. The ridge is
        found on the wall itself: rays from the centreline, `shader.behind_fold_step_mm` apart over the next
        fold spacing, and the nearest wall they hit (folds are oblique, wavy and unevenly spaced: `_haustra`)."""
        spacing = float(params["tube.fold_spacing_mm"])
        axial = float(location[2])  # the lumen's axial coordinate is world z (bends move only x and y)
        centre, tangent, _ = centreline_frame(params, axial)
        outward = location - centre
        outward = unit(outward - tangent * float(np.dot(outward, tangent)))
        step = float(self.cfg["shader"]["behind_fold_step_mm"])
        ridge, nearest = None, math.inf
        for ahead in np.arange(step, spacing + step / 2.0, step):
            hit = ray_cast(centreline(params, axial + ahead), outward)
            if hit is not None and hit[2] < nearest:
                ridge, nearest = axial + ahead, hit[2]
        if ridge is None:
            return None
        return ray_cast(centreline(params, ridge + float(params["lesion.fold_gap"]) * spacing), outward)


def lesion_colour(params: Mapping[str, Any], shader: Mapping) -> tuple[float, float, float]:
    """The lesion's HSV: the mucosa's colour shifted by `lesion.redness` (paler .. same .. redder), its hue
    jittered by `lesion.hue_jitter`."""
    hue, saturation, value = shifted_toward(float(params["mucosa.hue"]), float(params["mucosa.saturation"]),
                                            float(params["mucosa.value"]), float(params["lesion.redness"]), shader)
    return hue + float(params["lesion.hue_jitter"]), saturation, value


def lesion_inputs(params: Mapping[str, Any], shader: Mapping) -> tuple[dict[str, float], dict[str, Any]]:
    """The shape and material inputs of a frame's lesion (values, colours) from its parameters."""
    hue, saturation, value = lesion_colour(params, shader)
    mucosa = hsv_colour(float(params["mucosa.hue"]), float(params["mucosa.saturation"]), float(params["mucosa.value"]))
    own = hsv_colour(hue, saturation, value)
    colours = {"lesion.colour": own,
               # the wall's colour x this = the lesion's colour, where the wall shows its plain mucosa
               "lesion.wall_tint": tuple(c / max(m, 1e-4) for c, m in zip(own, mucosa, strict=True)),
               "lesion.colour_dark": shifted_colour(hue, saturation, value, shader["lesion_dark"]),
               "lesion.stipple_colour": shifted_colour(hue, saturation, value, shader["lesion_stipple"]),
               "lesion.vessel_colour": hsv_colour(params["vessels.hue"], params["vessels.saturation"],
                                                  params["vessels.value"]),
               "lesion.mucus_colour": hsv_colour(*(float(v) for v in shader["lesion_mucus_colour"]))}
    surface, strength = params["lesion.surface"], float(params["lesion.surface_strength"])
    if surface not in LESION_SURFACES:
        raise ValueError(f"render.params.lesion.surface: unknown surface {surface!r} ({', '.join(LESION_SURFACES)})")
    size = float(params["lesion.size_mm"])
    dome = params["lesion.type"] != "pedunculated"
    values = {
        **params,
        # textures are per mm; the material's coordinates are the model's unit frame (a dome is 2 units wide)
        "lesion.texture_scale_obj": float(params["lesion.texture_scale"]) * size,
        "lesion.pattern_scale_obj": float(params["lesion.pattern_scale"]) * size,
        "lesion.pits": strength * (surface == "pits"),
        "lesion.villous": strength * (surface == "villous"),
        "lesion.vascular": strength * (surface == "vascular"),
        "lesion.plateau_power": 1.0 - float(shader["lesion_plateau_gain"]) * float(params["lesion.plateau"]) if dome else 1.0,
        "lesion.depression": float(params["lesion.depression"]) if dome else 0.0,
        "lesion.lobe_level": int(shader["lesion_lobe_subdivisions"]) if float(params["lesion.lobes"]) > 0 else 0,
    }
    return values, colours
