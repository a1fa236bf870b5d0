"""ColonFramesDataModule: layouts, stratified and sequence-wise splits, errors."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from hydra.utils import instantiate

from synthmed.data.colon import (
    ColonFramesDataModule,
    grouped_split,
    read_frame_index,
    split_frames,
    stratified_split,
)


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


def test_classification_items_carry_the_mask_turned_with_the_frame(compose_config, frames_dir, tmp_path):
    import torch

    plain = frames_module(compose_config, root=str(frames_dir), task="classification", image_size=32, flips=False)
    flipped = frames_module(compose_config, root=str(frames_dir), task="classification", image_size=32, flips=True)
    seg = frames_module(compose_config, root=str(frames_dir), task="segmentation", image_size=32, flips=False)
    for dm in (plain, flipped, seg):
        dm.setup()
    torch.manual_seed(1)
    for i in range(len(plain.splits["train"])):
        a, b, m = plain.splits["train"][i], flipped.splits["train"][i], seg.splits["train"][i]
        assert a["mask"].dtype == torch.float32 and torch.equal(a["mask"], m["label"].float())  # the frame's mask
        assert a["label"].item() == int(m["label"].any())  # a lesion frame's mask has pixels
        k, f = next((k, f) for k in range(4) for f in range(2)
                    if torch.equal(_dihedral(a["image"], k, f, (1, 2)), b["image"]))
        assert torch.equal(_dihedral(a["mask"], k, f, (0, 1)), b["mask"])
    batch = next(iter(plain.train_dataloader()))
    assert batch["mask"].shape == (len(batch["label"]), 32, 32)
    # an ImageFolder has no masks: its items have none
    _, rows = read_frame_index(frames_dir)
    for row in rows:
        folder = tmp_path / ("lesion" if row["label"] else "normal")
        folder.mkdir(exist_ok=True)
        shutil.copy(row["image"], folder / row["image"].name)
    folder = frames_module(compose_config, root=str(tmp_path), task="classification", image_size=32)
    folder.setup()
    assert "mask" not in folder.splits["train"][0]


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
    # classification on Kvasir-SEG: a frame is a lesion frame iff its mask has pixels
    dm = frames_module(compose_config, root=str(tmp_path / "kvasir"), task="classification", image_size=16,
                       val_fraction=0.0, test_fraction=1.0)
    dm.setup()
    truth = {r["id"]: r["label"] for r in rows}
    test = dm.splits["test"]
    assert len(test) == 40 and all(test[i]["label"].item() == truth[test[i]["id"]] for i in range(40))
    assert dm.describe()["splits"]["test"] == {"frames": 40, "lesion": 20, "normal": 20}
    # an ImageFolder of one class (lesion frames only) is a dataset too
    shutil.rmtree(tmp_path / "folder" / "normal")
    layout, lesion_rows = read_frame_index(tmp_path / "folder")
    assert layout == "imagefolder" and len(lesion_rows) == 20 and all(r["label"] == 1 for r in lesion_rows)


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


def test_grouped_split_keeps_groups_whole_stratified_and_seeded():
    # 10 sequences of 4 frames: s0-s4 show a lesion in some frames, s5-s9 never
    labels = np.array([0, 1, 1, 0] * 5 + [0] * 20)
    groups = [f"s{i // 4}" for i in range(40)]
    parts = grouped_split(labels, groups, 0.2, 0.2, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(40))
    seqs = [{groups[i] for i in part} for part in parts]
    assert not (seqs[0] & seqs[1] or seqs[0] & seqs[2] or seqs[1] & seqs[2])  # a sequence lies in one split
    for split in seqs[1:]:  # one lesion sequence and one normal sequence each in val and test
        assert len(split) == 2 and len(split & {f"s{k}" for k in range(5)}) == 1
    again = grouped_split(labels, groups, 0.2, 0.2, seed=1)
    assert all((a == b).all() for a, b in zip(parts, again, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(parts, grouped_split(labels, groups, 0.2, 0.2, seed=2),
                                                       strict=True))


def test_manifest_with_sequences_splits_by_sequence(compose_config, frames_dir, tmp_path):
    root = tmp_path / "seq"
    shutil.copytree(frames_dir, root)
    with (root / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        row["sequence"] = f"seq{i // 4:02d}" if i < 36 else ""  # the last 4 frames belong to no sequence
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sequence_of = {r["id"]: r["sequence"] or r["id"] for r in rows}
    dm = frames_module(compose_config, root=str(root), image_size=16, val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    seen = {name: {sequence_of[i] for i in split.ids} for name, split in dm.splits.items()}
    assert sum(len(split) for split in dm.splits.values()) == 40
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])
    assert len(dm.splits["test"]) > 0 and len(dm.splits["val"]) > 0
    again = frames_module(compose_config, root=str(root), image_size=16, val_fraction=0.2, test_fraction=0.2)
    again.setup()
    assert again.splits["test"].ids == dm.splits["test"].ids  # deterministic for a seed
    # the public helper (used by analyses that must test on the CNN's test frames) gives the same split
    _, index = read_frame_index(root)
    test = split_frames(index, np.array([r["label"] for r in index]), 0.2, 0.2, seed=0)[2]
    assert [index[i]["id"] for i in test] == dm.splits["test"].ids
