"""What the renderer hands to other tools and what it leaves behind: coco.json read by pycocotools, render
workers sized from the CPUs the job may use, `render.device`, and a kill -9 that leaves no live workers and
no scratch behind. Real (tiny) Blender renders."""

from __future__ import annotations

import importlib.util
import json
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
from processes import children, running

if importlib.util.find_spec("bpy") is None:
    pytest.skip("bpy is not installed", allow_module_level=True)

from synthmed.render import compose_render, render_dataset  # noqa: E402
from synthmed.render.config import resolve_config  # noqa: E402

TINY = ["render.resolution=48", "render.samples=2", "render.min_visible_pixels=4", "render.preview_frames=2"]


def _frames(root: Path) -> dict[str, bytes]:
    return {f"{sub}/{p.name}": p.read_bytes() for sub in ("images", "masks") for p in sorted((root / sub).glob("*.png"))}


# --------------------------------------------------------------------------------- coco.json
@pytest.fixture(scope="module")
def coco_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coco")
    cfg = compose_render([*TINY, "render.num_frames=4", "render.workers=1", "render.coco=true",
                          "++render.overrides={lesion.present: 1, lesion.view_offaxis: 0.5, lesion.size_mm: 12.0}"])
    return render_dataset(cfg, out, progress=False)


def test_coco_masks_are_the_frames_masks(coco_set):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    coco = COCO(str(coco_set / "coco.json"))
    raw = json.loads((coco_set / "coco.json").read_text())
    assert raw["licenses"] == [] and {"description", "version", "date_created"} <= set(raw["info"])
    assert raw["categories"] == [{"id": 1, "name": "lesion", "supercategory": "colon"}]
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4]
    assert len(coco.anns) >= 2, "the forced lesions are not seen: the test is not meaningful"
    assert sorted(coco.anns) == list(range(1, len(coco.anns) + 1))
    for ann in coco.anns.values():
        assert ann["iscrowd"] == 0 and ann["category_id"] == 1
        assert isinstance(ann["segmentation"]["counts"], str)
        image = coco.imgs[ann["image_id"]]
        mask = np.asarray(Image.open(coco_set / image["file_name"].replace("images/", "masks/"))) > 0
        assert np.array_equal(coco.annToMask(ann), mask.astype(np.uint8))
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["area"] == int(mask.sum()) == int(mask_utils.area(ann["segmentation"]))
    with_lesion = {a["image_id"] for a in coco.anns.values()}
    for image in coco.imgs.values():  # a frame without an annotation shows no lesion that counts
        mask = np.asarray(Image.open(coco_set / image["file_name"].replace("images/", "masks/"))) > 0
        assert image["id"] in with_lesion or mask.sum() < 4


@pytest.mark.parametrize("kind", ["segm", "bbox"])
def test_coco_eval_of_the_truth_against_itself(coco_set, kind):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = COCO(str(coco_set / "coco.json"))
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                   **({"segmentation": a["segmentation"]} if kind == "segm" else {"bbox": a["bbox"]})}
                  for a in truth.anns.values()]
    evaluation = COCOeval(truth, truth.loadRes(detections), kind)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)  # AP @ IoU 0.50:0.95, all areas


def test_coco_json_is_reproducible(coco_set):
    """Written again from the same frames (a second render of the config finalises the same way), the file
    has the same bytes: nothing in it depends on when or where it was written."""
    from synthmed.render.outputs import finalize

    before = (coco_set / "coco.json").read_bytes()
    manifest = (coco_set / "manifest.csv").read_bytes()
    (coco_set / "coco.json").unlink()
    (coco_set / "manifest.csv").unlink()
    cfg = resolve_config(compose_render([*TINY, "render.num_frames=4", "render.workers=1", "render.coco=true",
                                         "++render.overrides={lesion.present: 1, lesion.view_offaxis: 0.5, lesion.size_mm: 12.0}"]))
    finalize(cfg, coco_set)
    assert (coco_set / "coco.json").read_bytes() == before
    assert (coco_set / "manifest.csv").read_bytes() == manifest  # rows streamed from the sidecars: the same bytes
    # a sidecar that cannot be read: one error naming it, and the manifest of before left as it was
    side = coco_set / "frames" / "000002.json"
    good = side.read_bytes()
    side.write_bytes(good[: len(good) // 2])
    with pytest.raises(RuntimeError, match=r"000002\.json: frame 2's sidecar cannot be read"):
        finalize(cfg, coco_set)
    assert (coco_set / "manifest.csv").read_bytes() == manifest
    assert not [f for f in coco_set.iterdir() if f.name.startswith(".manifest.csv.")]  # no temp file left
    side.write_bytes(good)


# --------------------------------------------------------------------------------- CPUs and devices
def test_threads_follow_the_cpu_affinity():
    """Under an affinity of one CPU (as SLURM, taskset or a container CPU set gives), a worker gets one
    Cycles thread, however many CPUs the machine has."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        pytest.skip("needs sched_setaffinity and at least 2 CPUs")
    code = textwrap.dedent("""
        import json, os
        from synthmed.render.pipeline import _threads, usable_cpus
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        cfg = {"threads": None, "workers": 1}
        print(json.dumps([usable_cpus(), _threads(cfg), _threads({"threads": 3, "workers": 1}), os.cpu_count()]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    usable, threads, fixed, machine = json.loads(proc.stdout.strip().splitlines()[-1])
    assert machine >= 2 and usable == 1 and threads == 1
    assert fixed == 3  # an explicit render.threads wins


def test_device_in_the_dataset_name():
    """`device: cpu` hashes as no key (every dataset name of before the key existed stays); `gpu` renders other
    bytes, so it names another dataset."""
    from synthmed.render.config import resolved_name

    cpu = resolve_config(compose_render(TINY))
    assert cpu["device"] == "cpu"
    assert resolved_name(cpu) == resolved_name({k: v for k, v in cpu.items() if k != "device"})
    assert resolved_name(resolve_config(compose_render([*TINY, "render.device=gpu"]))) != resolved_name(cpu)


def test_gpu_device_without_a_gpu_fails_naming_the_key(tmp_path):
    cfg = compose_render([*TINY, "render.num_frames=1", "render.workers=1", "render.device=gpu"])
    with pytest.raises(RuntimeError, match=r"render\.device"):
        render_dataset(cfg, tmp_path, progress=False)
    assert not list((tmp_path / "images").glob("*.png"))


# --------------------------------------------------------------------------------- kill -9
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_main_process_leaves_no_workers_and_no_scratch(tmp_path):
    """kill -9 of the render process alone (not its group): its workers die with it, the next render removes
    the dead process's scratch, finishes the dataset, and its frames equal an uninterrupted render's.
    Frames of ~3.5 s (256 samples, 1 thread a worker): the kill comes as the first frame is done, when its
    worker has just taken frame 2. A Pool worker left alone exits only once its frame is done (EOF on the task
    pipe), writing into the dataset meanwhile; the check window (2 s) is shorter than that."""
    overrides = [*TINY, "render.num_frames=3", "render.workers=2", "render.threads=1", "render.samples=256",
                 "render.lesion_probability=0.8"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    script = textwrap.dedent(f"""
        from synthmed.render import compose_render, render_dataset
        if __name__ == "__main__":
            render_dataset(compose_render({overrides!r}), {str(killed)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list((killed / "frames").glob("*.json"))) < 1:
            time.sleep(0.05)
        assert proc.poll() is None, "render finished before it could be killed"
        workers = [k for k in children(proc.pid) if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text()]
        assert len(workers) >= 2, workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 2
        while time.time() < deadline and any(running(w) for w in workers):
            time.sleep(0.05)
        assert not [w for w in workers if running(w)], "render workers outlived their killed parent"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    dead_scratch = [d for d in (killed / ".scratch").iterdir() if d.name.startswith(f"{proc.pid}@")]
    assert dead_scratch, "the killed render left no scratch folder: the test is not meaningful"
    assert not (killed / "manifest.csv").exists()
    render_dataset(compose_render(overrides), killed, progress=False)
    assert not any(d.exists() for d in dead_scratch) and not (killed / ".scratch").exists()
    render_dataset(compose_render(overrides), clean, progress=False)
    assert _frames(killed) == _frames(clean) and len(_frames(clean)) == 6
    assert (killed / "manifest.csv").read_bytes() == (clean / "manifest.csv").read_bytes()
    assert not list(killed.rglob("*.tmp*"))


def test_scratch_of_a_live_process_is_kept(tmp_path):
    """Two jobs may render shards of one dataset at once: only the scratch of dead processes is removed."""
    from synthmed.render.pipeline import SCRATCH, remove_dead_scratch

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        host = os.uname().nodename
        live_dir = tmp_path / SCRATCH / f"{sleeper.pid}@{host}"
        dead_dir = tmp_path / SCRATCH / f"{int(dead.stdout)}@{host}"
        other_host = tmp_path / SCRATCH / f"{int(dead.stdout)}@another-node"  # its pids mean nothing here
        for d in (live_dir, dead_dir, other_host):
            d.mkdir(parents=True)
            (d / "passes.exr").write_bytes(b"x")
        assert remove_dead_scratch(tmp_path) == [dead_dir]
        assert live_dir.exists() and other_host.exists() and not dead_dir.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
