"""Real (tiny) Blender renders through synthmed.render: contract, determinism, resume, occlusion, config."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# find, don't import: bpy must only ever be imported in the render workers
if importlib.util.find_spec("bpy") is None:
    pytest.skip("bpy is not installed", allow_module_level=True)

from hydra.errors import ConfigCompositionException  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from synthmed.render import RenderConfigError, compose_render, dataset_name, render_dataset  # noqa: E402
from synthmed.render.config import RENDERER_VERSION, param_names, resolve_config  # noqa: E402
from synthmed.render.lumen import PLAIN_RINGS  # noqa: E402

# the real config (experiment=colon_render), made tiny by Hydra overrides
TINY = ["render.resolution=48", "render.num_frames=6", "render.samples=2", "render.min_visible_pixels=4",
        "render.lesion_probability=0.8", "render.preview_frames=4"]
FRAMES, MIN_VISIBLE = 6, 4


def tiny(*overrides: str):
    """The `render` node of the tiny config, with more Hydra overrides."""
    return compose_render([*TINY, *overrides])


def _files(root: Path) -> dict[str, bytes]:
    out = {}
    for sub in ("images", "masks"):
        for p in sorted((root / sub).glob("*.png")):
            out[f"{sub}/{p.name}"] = p.read_bytes()
    out["manifest.csv"] = (root / "manifest.csv").read_bytes()
    return out


def _rows(root: Path) -> list[dict]:
    with (root / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    render_dataset(tiny("render.workers=1"), out, progress=False)
    return out


def test_contract(clean):
    for name in ("manifest.csv", "dataset.yaml", "preview.png"):
        assert (clean / name).exists(), name
    rows = _rows(clean)
    assert len(rows) == FRAMES
    still = {k for k in param_names(resolve_config(tiny())) if not k.startswith("sequence.")}  # mode=sequence only
    assert not (still - set(rows[0])), "manifest lacks sampled parameters"
    assert {"id", "seed", "label", "visible_pixels", "bbox_x0", "bbox_y1"} <= set(rows[0])
    assert {"clutter.bubbles_placed", "clutter.debris_placed", "clutter.fluid_placed"} <= set(rows[0])
    assert not any(k.startswith("sequence") for k in rows[0]), "still frames carry no sequence columns"
    assert len({r["seed"] for r in rows}) == len(rows)
    for r in rows:
        img = np.array(Image.open(clean / "images" / f"{r['id']}.png"))
        mask = np.array(Image.open(clean / "masks" / f"{r['id']}.png"))
        assert img.shape == (48, 48, 3) and img.dtype == np.uint8
        assert mask.shape == (48, 48)
        assert set(np.unique(mask)) <= {0, 255}
        visible = int((mask == 255).sum())
        assert visible == int(r["visible_pixels"])
        assert int(r["label"]) == int(visible >= MIN_VISIBLE)
        if visible:
            ys, xs = np.nonzero(mask)
            assert [int(r[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")] == \
                [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert any(int(r["label"]) for r in rows), "no visible lesion in the tiny set: test is not meaningful"
    meta = (clean / "dataset.yaml").read_text()
    assert "blender_version" in meta and "synthmed_version" in meta
    assert f"renderer_version: {RENDERER_VERSION}" in meta and dataset_name(tiny()) in meta
    assert not (clean / ".patterns").exists(), "the baked patterns outlive the finished dataset"


def test_workers_identical(clean, tmp_path):
    render_dataset(tiny("render.workers=2"), tmp_path, progress=False)
    assert _files(tmp_path) == _files(clean)


def test_a_renewed_cycles_scene_renders_the_same_frames(clean, tmp_path):
    """`render.session_frames`: every n-th render of a worker runs without Cycles' persistent data, which frees
    what the kept scene piled up for past lesions (docs/render.md, version 12's memory); no byte may change."""
    render_dataset(tiny("render.workers=1", "render.session_frames=2"), tmp_path, progress=False)
    assert _files(tmp_path) == _files(clean)


def test_shards_merge(clean, tmp_path):
    render_dataset(tiny("render.workers=1", "render.num_shards=2", "render.shard=1"), tmp_path, progress=False)
    assert not (tmp_path / "manifest.csv").exists()  # shard 0's frames are still missing
    render_dataset(tiny("render.workers=1", "render.num_shards=2", "render.shard=0"), tmp_path, progress=False)
    assert _files(tmp_path) == _files(clean) and (tmp_path / "dataset.yaml").exists()


def _frames_rendered_here(cfg, out: str, results) -> None:
    """render_dataset in this process; puts the number of frames it rendered itself (its log line) and
    whether it said it waited for another job."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("synthmed")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    render_dataset(cfg, out, progress=False)
    results.put((sum(int(r.args[0]) for r in records if r.msg.startswith("rendering")),
                 any(r.msg.startswith("waiting for") for r in records)))


def test_parallel_jobs_render_once(clean, tmp_path):
    """Two jobs of a parallel sweep need the same dataset at once: one renders it, the other waits and reuses."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # not a Pool: its daemonic workers may not start render workers
    results = ctx.Queue()
    jobs = [ctx.Process(target=_frames_rendered_here, args=(tiny("render.workers=1"), str(tmp_path), results))
            for _ in range(2)]
    for j in jobs:
        j.start()
    counts = sorted(results.get(timeout=300) for _ in jobs)
    for j in jobs:
        j.join()
    assert [c[0] for c in counts] == [0, FRAMES]
    assert counts[0][1], "the job that rendered nothing did not say it waited for the other"
    assert _files(tmp_path) == _files(clean)


def test_rerun_skips_finished(clean):
    before = {p: p.stat().st_mtime_ns for p in (clean / "images").glob("*.png")}
    t = time.time()
    render_dataset(tiny("render.workers=1"), clean, progress=False)
    assert time.time() - t < 5
    assert before == {p: p.stat().st_mtime_ns for p in (clean / "images").glob("*.png")}


def test_resume_after_kill(clean, tmp_path):
    overrides = [*TINY, "render.workers=1"]
    script = textwrap.dedent(f"""
        from synthmed.render import compose_render, render_dataset
        if __name__ == "__main__":
            render_dataset(compose_render({overrides!r}), {str(tmp_path)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list((tmp_path / "frames").glob("*.json"))) < 2:
            time.sleep(0.05)
        assert proc.poll() is None, "render finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the render and its worker, mid-way
        proc.wait()
    assert not (tmp_path / "manifest.csv").exists()
    for p in (tmp_path / "images").glob("*.png"):
        Image.open(p).load()  # every PNG on disk decodes
    render_dataset(compose_render(overrides), tmp_path, progress=False)
    assert len(_rows(tmp_path)) == FRAMES
    assert _files(tmp_path) == _files(clean)
    assert not list(tmp_path.rglob("*.tmp*"))


def test_hidden_lesion_not_in_mask(tmp_path):
    # a lesion placed on the wall along a ray 150% of the half-FOV off axis, i.e. behind the camera's view
    cfg = tiny("render.num_frames=2", "render.workers=1",
               "++render.overrides={lesion.present: 1, lesion.view_offaxis: 2.2, lesion.type: sessile, "
               "lesion.size_mm: 6.0, lesion.behind_fold: 0, camera.fov_deg: 130.0}")
    render_dataset(cfg, tmp_path, progress=False)
    rows = _rows(tmp_path)
    for r in rows:
        assert r["lesion.present"] == "1" and r["lesion.placed"] == "1"
        assert int(r["visible_pixels"]) == 0 and r["label"] == "0"
        assert not np.array(Image.open(tmp_path / "masks" / f"{r['id']}.png")).any()


NO_CLUTTER = {"clutter.bubbles": 0, "clutter.debris": 0, "clutter.fluid": 0, "clutter.red_patch": 0}


def test_lesion_behind_a_fold_not_in_mask(tmp_path):
    """A lesion in the field of view but hidden from the lens by a haustral fold is absent from the mask
    (label 0); the same lesion on the near side of the fold is seen."""
    # a straight lumen of radius 18 mm with full-ring folds 30 mm apart: the ridge at z = 150 mm stands
    # 0.42 x 18 = 7.6 mm into the lumen; the lens sits on the axis at z = 125 mm, looking down it
    scene = {"tube.bend_amplitude_mm": 0.0, "tube.bend_amplitude2_mm": 0.0, "tube.radius_variation": 0.0,
             "tube.wall_noise_mm": 0.0, "tube.radius_mm": 18.0, "tube.fold_spacing_mm": 30.0, "tube.fold_phase": 0.0,
             "tube.fold_depth": 0.42, "tube.fold_sharpness": 7.0, "tube.fold_partial": 0.0, **PLAIN_RINGS,
             "camera.axial_mm": 125.0, "camera.offset": 0.0, "camera.yaw_deg": 0.0, "camera.pitch_deg": 0.0,
             "camera.fov_deg": 130.0, "lesion.present": 1, "lesion.placement": "axial", "lesion.type": "sessile",
             "lesion.size_mm": 8.0, "lesion.height_mm": 3.0, "lesion.tilt_deg": 0.0, "lesion.angle_deg": 30.0,
             **NO_CLUTTER}
    rows = {}
    for name, axial in (("before", 144.0), ("behind", 156.0)):  # 6 mm before / beyond the ridge
        cfg = tiny("render.num_frames=1", "render.workers=1")
        cfg.overrides = {**scene, "lesion.axial_mm": axial}  # assigned: the schema checks it like an override
        out = render_dataset(cfg, tmp_path / name, progress=False)
        (rows[name],) = _rows(out)
        rows[name]["mask"] = np.array(Image.open(out / "masks" / "000000.png"))
    for r in rows.values():
        assert r["lesion.placed"] == "1"
    # the lesion behind the fold lies ~30 degrees off the lens's axis, well inside the field (65 either side):
    # only the fold hides it
    off_axis = math.degrees(math.acos((156.0 - 125.0) / float(rows["behind"]["lesion.distance_mm"])))
    assert off_axis < 45.0
    assert int(rows["before"]["visible_pixels"]) >= MIN_VISIBLE and rows["before"]["label"] == "1"
    assert int(rows["behind"]["visible_pixels"]) == 0 and rows["behind"]["label"] == "0"
    assert not rows["behind"]["mask"].any()


def test_baked_pattern_renders_the_procedural_frames(clean, tmp_path):
    """The baked mucosa pattern is a cache of the procedural one: the same frames, masks byte-equal, RGB
    within interpolation and 8-bit rounding (a wrong lookup is off by tens). Baked at the texel 128-px frames
    get (0.4 mm): renderer 4's vessels are thinner than the 1.1 mm texel 48-px frames get by default, and
    interpolating their distance field there loses some (frame 0: mean 0.60, 99th percentile 11). The
    processor's shadow lift (`post.processor`) scales a dark pixel's difference by up to about 2x. Its light
    control is held (`endoscope.exposure_max_gain=1`): it sets a frame's gain from the 99th percentile of its
    luminance, and on renderer 7's frame 0 (speckled with small vessels at 48 px) the two lookups' percentiles
    differed by ~1%, which moved every pixel (mean 1.01 with it, 0.23 without). The processor's structure
    enhancement is off too: it multiplies fine differences by up to 2.5x (frame 0: mean 0.57 with it). Both runs
    set the texel: the capillary net's lines are drawn no thinner than it in either mode (`capillary_line`).
    A vessel tree procedural mode grows after the first render must reach the frames: until renderer 24 Cycles'
    kept scene held the tree texture as first uploaded, and frames 1 and 2 had no main vessels (with renderer
    24's denser trees they were 0.70 and 0.45 from the baked frames; fixed, the three are 0.19, 0.07, 0.04)."""
    held = ("render.endoscope.exposure_max_gain=1.0", "render.params.endoscope.enhance=0", "render.textures.texel_mm=0.4")
    procedural = render_dataset(tiny("render.num_frames=3", "render.workers=1", "render.textures.mode=procedural", *held),
                                tmp_path / "procedural", progress=False)
    baked = render_dataset(tiny("render.num_frames=3", "render.workers=1", *held), tmp_path / "baked", progress=False)
    for i in range(3):
        name = f"{i:06d}.png"
        assert (procedural / "masks" / name).read_bytes() == (clean / "masks" / name).read_bytes()
        a, b = (np.asarray(Image.open(root / "images" / name), np.int16) for root in (procedural, baked))
        diff = np.abs(a - b)
        assert diff.mean() < 0.3 and np.percentile(diff, 99) <= 16, (i, diff.mean(), np.percentile(diff, 99), diff.max())
    assert dataset_name(tiny("render.textures.mode=procedural")) != dataset_name(tiny())


def test_shader_constant_from_the_config(clean, tmp_path):
    """A shader constant overridden through Hydra reaches the frames and the metadata, and names a new
    dataset; it changes colours only, never a mask."""
    size = ("render.workers=1", "render.num_frames=3")
    out = render_dataset(tiny(*size, "render.shader.mucosa_rim_blend=0.9"), tmp_path, progress=False)
    meta = OmegaConf.load(out / "dataset.yaml")
    assert meta.config.shader.mucosa_rim_blend == 0.9
    assert meta.name == dataset_name(tiny(*size, "render.shader.mucosa_rim_blend=0.9")) != dataset_name(tiny(*size))
    names = [f"{i:06d}.png" for i in range(3)]
    assert all((out / "masks" / n).read_bytes() == (clean / "masks" / n).read_bytes() for n in names)
    assert any((out / "images" / n).read_bytes() != (clean / "images" / n).read_bytes() for n in names)


def test_dataset_name_ignores_how_the_work_is_spread(monkeypatch):
    assert dataset_name(tiny("render.workers=1")) == dataset_name(tiny("render.workers=3", "render.threads=2",
                                                                       "render.session_frames=7"))
    before = dataset_name(tiny())
    monkeypatch.setattr("synthmed.render.config.RENDERER_VERSION", RENDERER_VERSION + 1)
    assert dataset_name(tiny()) != before, "a new renderer version must not reuse the old datasets"
    monkeypatch.undo()
    assert dataset_name(tiny()) != dataset_name(tiny("render.seed=1"))


def test_still_dataset_name_ignores_the_sequence_knobs():
    """The sequence knobs change no still pixel, so still datasets keep their name when they change; a
    sequence dataset is another dataset."""
    still = dataset_name(tiny())
    assert still == dataset_name(tiny("render.sequence.length=8", "render.params.sequence.step_mm=2.0"))
    assert still != dataset_name(tiny("render.mode=sequence", "render.num_frames=16"))


@pytest.mark.parametrize("override, key", [
    ("render.engine.samplez=3", "render.engine.samplez"),       # a typo: Hydra names it at compose time
    ("render.shader.rim_blnd=0.5", "render.shader.rim_blnd"),
    ("render.samples=many", "render.samples"),                 # a wrong type
    ("render.textures.mode=bakd", "render.textures.mode"),     # not one of the modes
])
def test_bad_key_or_type_fails_at_compose_time(override, key):
    with pytest.raises(ConfigCompositionException) as error:
        compose_render([override])
    assert key in str(error.value) + str(error.value.__cause__)


def test_bad_values_name_the_key():
    """What the schema cannot see: distributions, ranges, parameter names in overrides."""
    cases = [
        (["++render.overrides={lesion.sise_mm: 3}"], "render.overrides.lesion.sise_mm"),
        (["~render.params.lesion.size_mm", "+render.params.lesion.size_mm={uniform: [5]}"], "render.params.lesion.size_mm"),
        (["render.textures.vessel_scale=[0.05]"], "render.textures.vessel_scale"),
        (["render.shard=2"], "render.shard"),
        (["render.endoscope.exposure_percentile=150"], "render.endoscope.exposure_percentile"),
        (["render.endoscope.tone_lift=-1"], "render.endoscope.tone_lift"),
        (["render.shader.vessel_taper=1.5"], r"render.shader.vessel_taper' must be in \[0, 1\].*got 1.5"),
        (["render.shader.grain_patch_contrast=-0.2"], r"render.shader.grain_patch_contrast' must be in \[0, 1\].*got -0.2"),
        (["render.shader.grain_patch_edges=[0.6,0.4]"], r"render.shader.grain_patch_edges' must be \[low, high\]"),
        (["render.shader.groove_cut=1.5"], r"render.shader.groove_cut' must be in \[0, 1\].*got 1.5"),
        (["render.shader.groove_pixel_width=-0.5"], r"render.shader.groove_pixel_width' must be >= 0.*got -0.5"),
        (["render.shader.pattern_ripple_offset=[1.0,2.0]"], r"render.shader.pattern_ripple_offset' must have 3 entries"),
        (["render.shader.lesion_stipple_fill=1.2"], r"render.shader.lesion_stipple_fill' must be in \[0, 1\].*got 1.2"),
        (["render.shader.lesion_stipple_radius=0"], r"render.shader.lesion_stipple_radius' must be > 0.*got 0"),
        (["render.shader.lesion_nodule_radius=-0.5"], r"render.shader.lesion_nodule_radius' must be > 0.*got -0.5"),
        (["render.endoscope.highlight_knee=1.5"], r"render.endoscope.highlight_knee' must be in \[0, 1\].*got 1.5"),
        (["render.session_frames=-1"], r"render.session_frames' must be >= 0.*got -1"),
        (["render.shader.groove_cut_edges=[0.5,0.5]"], r"render.shader.groove_cut_edges' must be \[low, high\]"),
        (["render.shader.lesion_base_edges=[0.6,0.0]"], r"render.shader.lesion_base_edges' must be \[low, high\]"),
        (["render.endoscope.far_smoothing_px=-1"], r"render.endoscope.far_smoothing_px' must be >= 0"),
        (["render.endoscope.black_level=1"], r"render.endoscope.black_level' must be in \[0, 1\)"),
        (["render.endoscope.lens_halo_sigma=0"], r"render.endoscope.lens_halo_sigma' must be > 0"),
        (["render.endoscope.enhance_sigma=0"], r"render.endoscope.enhance_sigma' must be > 0"),
        (["render.textures.capillary_width=0"], r"render.textures.capillary_width' must be > 0"),
        (["render.shader.capillary_fade_edges=[3,1]"], r"render.shader.capillary_fade_edges' must be \[low, high\]"),
        (["render.shader.capillary_patch_floor=2"], r"render.shader.capillary_patch_floor' must be in \[0, 1\]"),
        (["render.endoscope.far_smoothing_mm=[120,60]"], r"render.endoscope.far_smoothing_mm' must be \[near, far\]"),
        (["render.endoscope.far_smoothing_mm=[60]"], r"render.endoscope.far_smoothing_mm' must be \[near, far\]"),
        (["render.endoscope.dim_reddening=-0.1"], r"render.endoscope.dim_reddening' must be >= 0"),
        (["render.endoscope.dim_reddening_most=0"], r"render.endoscope.dim_reddening_most' must be > 0"),
        (["render.shader.vessel_fade_floor=1.5"], r"render.shader.vessel_fade_floor' must be in \[0, 1\].*got 1.5"),
        (["render.shader.vessel_fade_edges=[40,10]"], r"render.shader.vessel_fade_edges' must be \[low, high\]"),
        (["render.shader.mucosa_tint_edges=[0.6,0.4]"], r"render.shader.mucosa_tint_edges' must be \[low, high\]"),
        (["render.textures.tree.min_calibre=1.5"], r"render.textures.tree.min_calibre' must be in \(0, 1\).*got 1.5"),
        (["render.textures.tree.child_calibre=[0.8,0.5]"], r"render.textures.tree.child_calibre' must be \[low, high\]"),
        (["render.textures.tree.step=0"], r"render.textures.tree.step' must be > 0"),
    ]
    for overrides, message in cases:
        with pytest.raises(RenderConfigError, match=message):
            resolve_config(tiny(*overrides))
    # a plain mapping would bypass the schema: refused, naming the way to compose one
    with pytest.raises(RenderConfigError, match="compose_render"):
        resolve_config({"engine": {"sampels": 3}})


def test_import_is_lazy():
    code = "import sys, synthmed.render; assert 'bpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
