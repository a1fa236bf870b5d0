"""The colonoscopy experiments end to end on a real (tiny) Blender render: classify, fine-tune, segment."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_synthmed

from synthmed.data.colon import read_frame_index
from synthmed.utils import compose_config as _compose  # a module-scoped fixture cannot take the function one

CI = ["scale=ci", "logger=csv"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    from synthmed.render import render_dataset

    cfg = _compose(["experiment=colon_render", "scale=ci", "render.num_frames=24", "render.resolution=48"])
    return render_dataset(cfg.render, tmp_path_factory.mktemp("render") / "frames", progress=False)


@pytest.fixture(scope="module")
def classifier_ckpt(rendered, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cls") / "run"
    run_synthmed(["experiment=colon_cls", *CI, f"data.root={rendered}", f"hydra.run.dir={out}"], cwd=out.parent)
    return out / "checkpoints" / "best.ckpt"


def relay(rendered: Path, dest: Path, layout: str) -> Path:
    """Re-lay a rendered dataset as real data would come: ImageFolder (normal/, lesion/) or Kvasir-SEG."""
    _, rows = read_frame_index(rendered)
    for row in rows:
        if layout == "imagefolder":
            target = dest / ("lesion" if row["label"] else "normal")
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(row["image"], target / row["image"].name)
        else:
            for sub, src in (("images", row["image"]), ("masks", row["mask"])):
                (dest / sub).mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dest / sub / src.name)
    return dest


def test_classifier_on_rendered_frames(classifier_ckpt):
    metrics = json.loads((classifier_ckpt.parent.parent / "metrics.json").read_text())
    assert metrics["status"] == "ok" and 0.0 <= metrics["test"]["test/acc"] <= 1.0
    assert torch.load(classifier_ckpt, weights_only=True)["state_dict"]


@pytest.mark.parametrize("freeze", [False, True])
def test_finetune_on_imagefolder_frames(rendered, classifier_ckpt, tmp_path, freeze):
    real = relay(rendered, tmp_path / "real", "imagefolder")
    out = tmp_path / "ft"
    run_synthmed(["experiment=colon_finetune", *CI, f"data.root={real}", f"pretrained={classifier_ckpt}",
                  f"model.freeze_features={str(freeze).lower()}", "trainer.max_epochs=1", f"hydra.run.dir={out}"],
                 cwd=tmp_path)
    assert json.loads((out / "metrics.json").read_text())["status"] == "ok"
    before = torch.load(classifier_ckpt, weights_only=True)["state_dict"]
    after = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    conv = "net.features.0.weight"
    assert torch.equal(before[conv], after[conv]) == freeze  # frozen features stay put, others move
    assert not torch.equal(before["net.head.4.weight"], after["net.head.4.weight"])


def test_finetune_needs_pretrained_and_data(tmp_path):
    proc = run_synthmed(["experiment=colon_finetune", *CI], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "needs a value for data.root, pretrained" in proc.stderr


def test_rendered_manifest_is_readable_by_the_datamodule(rendered):
    with (rendered / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and {"id", "label"} <= set(rows[0])


def test_segmentation_and_kvasir_finetune(rendered, tmp_path):
    seg = tmp_path / "seg"
    run_synthmed(["experiment=colon_seg", *CI, f"data.root={rendered}", f"hydra.run.dir={seg}"], cwd=tmp_path)
    metrics = json.loads((seg / "metrics.json").read_text())
    assert {"test/iou_fg", "test/dice_fg"} <= set(metrics["test"])
    assert all(0.0 <= metrics["test"][k] <= 1.0 for k in ("test/iou_fg", "test/dice_fg"))
    assert list((seg / "images").glob("*overlay*.png")), "no overlay picture"
    kvasir = relay(rendered, tmp_path / "kvasir", "kvasir")
    out = tmp_path / "ft"
    run_synthmed(["experiment=colon_finetune_seg", *CI, f"data.root={kvasir}",
                  f"pretrained={seg / 'checkpoints' / 'best.ckpt'}", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert "test/iou_fg" in json.loads((out / "metrics.json").read_text())["test"]
