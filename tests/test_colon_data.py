"""ColonFramesDataModule: layouts, stratified splits, errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hydra.utils import instantiate

from synthmed.data.colon import ColonFramesDataModule, read_frame_index, stratified_split


def frames_module(compose_config, **keys) -> ColonFramesDataModule:
    """The data module of `data=colon_frames` as the configs build it, with `keys` overriding its config."""
    return instantiate(compose_config(["data=colon_frames", "scale=ci"]).data, **keys)


def test_stratified_split_is_disjoint_balanced_and_seeded():
    labels = np.array([0] * 50 + [1] * 50)
    train, val, test = stratified_split(labels, 0.1, 0.1, seed=3)
    assert len(set(train) | set(val) | set(test)) == 100
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert labels[val].sum() == 5 and labels[test].sum() == 5
    again = stratified_split(labels, 0.1, 0.1, seed=3)
    assert all((a == b).all() for a, b in zip((train, val, test), again, strict=True))
    other = stratified_split(labels, 0.1, 0.1, seed=4)
    assert not (other[2] == test).all()


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_rendered_layout_batches(compose_config, frames_dir, task):
    dm = frames_module(compose_config, root=str(frames_dir), task=task, image_size=32, batch_size=4)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32)
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    if task == "segmentation":
        assert batch["label"].shape == (4, 32, 32) and set(batch["label"].unique().tolist()) <= {0, 1}
    else:
        assert batch["label"].shape == (4,)
    assert len(dm.splits["train"]) + len(dm.splits["val"]) + len(dm.splits["test"]) == 40


def test_flips_move_image_and_mask_together_on_train_only(compose_config, frames_dir):
    import torch

    plain = frames_module(compose_config, root=str(frames_dir), task="segmentation", image_size=32, flips=False)
    flipped = frames_module(compose_config, root=str(frames_dir), task="segmentation", image_size=32, flips=True)
    plain.setup()
    flipped.setup()
    torch.manual_seed(0)
    seen = set()
    for i in range(len(plain.splits["train"])):
        a, b = plain.splits["train"][i], flipped.splits["train"][i]
        # the one of the 8 flips / quarter turns that maps the image also maps the mask
        matches = [(k, f) for k in range(4) for f in range(2)
                   if torch.equal(_dihedral(a["image"], k, f, (1, 2)), b["image"])]
        assert matches, f"train item {i} is not a flip / quarter turn of the frame"
        assert any(torch.equal(_dihedral(a["label"], k, f, (0, 1)), b["label"]) for k, f in matches)
        seen.add(matches[0])
    assert len(seen) > 1  # random per item
    for split in ("val", "test"):  # evaluation frames are never flipped
        assert torch.equal(plain.splits[split][0]["image"], flipped.splits[split][0]["image"])


def _dihedral(x, k, flip, dims):
    import torch

    y = torch.rot90(x, k, dims)
    return y.flip(dims[1]) if flip else y


def test_imagefolder_and_kvasir_layouts(compose_config, frames_dir, tmp_path):
    _, rows = read_frame_index(frames_dir)
    for row in rows:
        cls = "lesion" if row["label"] else "normal"
        (tmp_path / "folder" / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(row["image"], tmp_path / "folder" / cls / row["image"].name)
        for sub, src in (("images", row["image"]), ("masks", row["mask"])):
            (tmp_path / "kvasir" / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, tmp_path / "kvasir" / sub / src.name)
    layout, folder_rows = read_frame_index(tmp_path / "folder")
    assert layout == "imagefolder" and sum(r["label"] for r in folder_rows) == 20
    layout, kvasir_rows = read_frame_index(tmp_path / "kvasir")
    assert layout == "kvasir" and len(kvasir_rows) == 40
    dm = frames_module(compose_config, root=str(tmp_path / "kvasir"), task="segmentation", image_size=16, batch_size=2)
    dm.setup()
    assert len(dm.splits["test"]) > 0
    dm = frames_module(compose_config, root=str(tmp_path / "kvasir"), task="classification", image_size=16)
    with pytest.raises(ValueError, match="classification needs labels"):
        dm.setup()


def test_bad_dataset_errors_name_the_file(compose_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a frames dataset"):
        read_frame_index(tmp_path)
    (tmp_path / "manifest.csv").write_text("id,label\na,7\n")
    with pytest.raises(ValueError, match="label '7'"):
        read_frame_index(tmp_path)
    (tmp_path / "manifest.csv").write_text("id,label\na,1\n")
    dm = frames_module(compose_config, root=str(tmp_path), image_size=8)
    with pytest.raises(ValueError, match="cannot read frame a"):
        dm.setup()
