"""BratsSliceDataModule: subject-level splits, slice selection, targets, cache reuse, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from test_brats_discovery import write_subject

import synthmed.data.brats.cache as cache_mod
import synthmed.data.brats.slices as slices_mod
from synthmed import artifacts
from synthmed.augment import TransformAugmenter
from synthmed.data.brats.slices import BratsSliceDataModule


def _transform_args():
    """aug/transform.yaml's knobs, from the real config (the constructor holds no defaults)."""
    from omegaconf import OmegaConf

    from synthmed.utils import compose_config

    aug = compose_config(["aug=transform", "scale=ci"]).aug
    return OmegaConf.to_container(aug, resolve=True)


TRANSFORM = _transform_args()
TRANSFORM_ARGS = {k: v for k, v in TRANSFORM.items() if k != "_target_"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("brats")
    for i in range(8):
        write_subject(base / ("HGG" if i % 2 else "LGG"), f"Sub{i:02d}", seed=i, tumour_slices=(3, 3 + 3 + i % 3))
    return base


DM_ARGS = dict(modalities=["flair", "t1", "t1ce", "t2"], target="wt", image_size=16, num_train_slices=None,
               num_train_subjects=None,
               empty_fraction=0.0, val_fraction=0.25, test_fraction=0.25, split_seed=0, batch_size=4, num_workers=0,
               aug=None)


def make_cache(root, data_dir, image_size=16, modalities=DM_ARGS["modalities"], skip_invalid=False):
    """The slice-cache stage, as the runner calls it."""
    return artifacts.brats_slice_cache(root=str(root), modalities=modalities, image_size=image_size,
                                       skip_invalid=skip_invalid, data_dir=str(data_dir))


def make_dm(root, data_dir, skip_invalid=False, **kw):
    """The stage makes (or finds) the slice cache; the data module only loads it."""
    args = {**DM_ARGS, **kw}
    cache = make_cache(root, data_dir, args["image_size"], args["modalities"], skip_invalid)
    dm = BratsSliceDataModule(root=str(root), cache=str(cache), **args)
    dm.prepare_data()
    dm.setup()
    return dm


def test_subject_level_split_and_items(root, tmp_path):
    dm = make_dm(root, tmp_path)
    sets = {k: set(v) for k, v in dm.splits.items()}
    assert sets["train"].isdisjoint(sets["val"]) and sets["train"].isdisjoint(sets["test"])
    assert sets["val"].isdisjoint(sets["test"]) and sum(map(len, sets.values())) == 8
    for split, ds in dm.datasets.items():
        assert {ds[i]["subject"] for i in range(len(ds))} <= sets[split]
    item = dm.datasets["train"][0]
    assert item["image"].shape == (4, 16, 16) and item["image"].dtype == torch.float32
    assert item["label"].shape == (16, 16) and item["label"].dtype == torch.int64
    assert item["seg"].max() <= 3 and item["brain"].shape == (1, 16, 16)
    assert item["label"].sum() > 0  # tumour slices only by default
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (4, 16, 16)
    other = make_dm(root, tmp_path, split_seed=1)
    assert other.splits != dm.splits


def test_fewer_training_subjects_are_nested_and_leave_val_and_test_alone(root, tmp_path):
    """data.num_train_subjects: the first k training subjects of the seeded order, so 1 is inside 2 is inside all;
    val and test never change; the training slices come from those subjects only; too many is an error."""
    full = make_dm(root, tmp_path)
    assert len(full.splits["train"]) == 4
    kept = {}
    for k in (1, 2, 4):
        dm = make_dm(root, tmp_path, num_train_subjects=k)
        kept[k] = set(dm.splits["train"])
        assert len(kept[k]) == k and kept[k] <= set(full.splits["train"])
        assert dm.splits["val"] == full.splits["val"] and dm.splits["test"] == full.splits["test"]
        train = dm.datasets["train"]
        assert {train[i]["subject"] for i in range(len(train))} == kept[k]
    assert kept[1] < kept[2] < kept[4] == set(full.splits["train"])
    with pytest.raises(ValueError, match=r"data.num_train_subjects=5: the split \(seed 0\) has only 4 training"):
        make_dm(root, tmp_path, num_train_subjects=5)
    with pytest.raises(ValueError, match="data.num_train_subjects=0"):
        make_dm(root, tmp_path, num_train_subjects=0)


def test_counts_modalities_targets(root, tmp_path):
    dm = make_dm(root, tmp_path, num_train_slices=5, modalities=["flair", "t2"], target="et", empty_fraction=0.4)
    train = dm.datasets["train"]
    assert len(train) == 5
    assert train[0]["image"].shape == (2, 16, 16)
    with_tumour = sum(int(train[i]["seg"].sum() > 0) for i in range(5))
    assert with_tumour == 3
    for i in range(5):
        assert torch.equal(train[i]["label"], (train[i]["seg"] == 3).long())
    mc = make_dm(root, tmp_path, target="multiclass")
    item = mc.datasets["train"][0]
    assert torch.equal(item["label"], item["seg"])


def test_zscore_within_brain(root, tmp_path):
    dm = make_dm(root, tmp_path / "z", image_size=32)
    sub = dm.subjects[0]
    images, brain, _ = cache_mod.preprocess_volumes(sub, dm.modalities)
    for m in range(4):
        vals = images[m][brain]
        assert abs(vals.mean()) < 1e-3 and abs(vals.std() - 1) < 1e-3
        assert (images[m][~brain] == 0).all()


def test_second_run_reads_no_nifti(root, tmp_path, monkeypatch):
    first = make_dm(root, tmp_path)
    files = sorted((tmp_path / "brats_slices").rglob("image.npy"))
    assert len(files) == 8
    assert isinstance(np.load(files[0], mmap_mode="r"), np.memmap)
    meta = artifacts.read_metadata(first.cache)  # what made it, which subjects, the label convention
    assert meta["stage"] == "brats_slices" and meta["config"]["image_size"] == 16 and len(meta["subjects"]) == 8
    assert meta["labels"]["regions"] == {"wt": [1, 2, 4], "tc": [1, 4], "et": [4]}
    assert meta["labels"]["labels"] == [0, 1, 2, 4] and meta["labels"]["indices"] == [0, 1, 2, 3]

    def boom(*a, **k):
        raise AssertionError("NIfTI decoded on a cached run")

    monkeypatch.setattr(cache_mod, "read_volume", boom)
    monkeypatch.setattr("nibabel.load", boom)
    second = make_dm(root, tmp_path)
    assert second.cache == first.cache
    a, b = first.datasets["train"][0], second.datasets["train"][0]
    assert torch.equal(a["image"], b["image"]) and a["subject"] == b["subject"]


def test_data_module_only_loads_and_names_the_missing_key(root, tmp_path):
    with pytest.raises(ValueError, match=r"data.cache=None: BratsSliceDataModule loads a folder and makes none"):
        BratsSliceDataModule(root=str(root), cache=None, **DM_ARGS)
    with pytest.raises(ValueError, match=r"data.root=None"):
        BratsSliceDataModule(root=None, cache=str(tmp_path), **DM_ARGS)
    unfinished = BratsSliceDataModule(root=str(root), cache=str(tmp_path / "nothing"), **DM_ARGS)
    with pytest.raises(FileNotFoundError, match=r"data.cache=.*nothing.*artifact.yaml is missing"):
        unfinished.prepare_data()
    assert not list(tmp_path.rglob("*.npy"))  # nothing was made
    cache = make_cache(root, tmp_path, image_size=16)
    wrong = BratsSliceDataModule(root=str(root), cache=str(cache), **{**DM_ARGS, "image_size": 32})
    with pytest.raises(ValueError, match=r"holds image_size=16, but data.image_size=32"):
        wrong.prepare_data()


def _extractions(root, data_dir) -> int:
    """Make the slice cache as a parallel job would; return how many subjects this process extracted."""
    calls = []
    extract = cache_mod.extract_subject
    cache_mod.extract_subject = lambda *a: calls.append(a) or extract(*a)
    make_cache(root, data_dir)
    return len(calls)


def test_parallel_jobs_cache_the_slices_once(root, tmp_path):
    """Two jobs of a parallel sweep start on an empty cache at once: one extracts, the other waits and reuses."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        reads = pool.starmap(_extractions, [(root, tmp_path)] * 2)
    assert sorted(reads) == [0, 8]
    assert len(list((tmp_path / "brats_slices").rglob("done.json"))) == 8


def test_file_lock_serialises_processes(tmp_path):
    import multiprocessing

    counter = tmp_path / "counter.txt"
    counter.write_text("0")
    with multiprocessing.get_context("fork").Pool(4) as pool:  # read-sleep-write: lost updates without the lock
        pool.map(_locked_increment, [counter] * 4)
    assert counter.read_text() == "4"


def _locked_increment(path) -> None:
    import time

    from synthmed.utils import file_lock

    with file_lock(path.with_suffix(".lock")):
        value = int(path.read_text())
        time.sleep(0.1)
        path.write_text(str(value + 1))


def test_bad_options(root, tmp_path):
    with pytest.raises(ValueError, match="data.modalities"):
        BratsSliceDataModule(root=str(root), cache=str(root), **{**DM_ARGS, "modalities": ["dwi"]})
    with pytest.raises(ValueError, match="data.target"):
        BratsSliceDataModule(root=str(root), cache=str(root), **{**DM_ARGS, "target": "all"})


def test_transform_aug_adds_extra(root, tmp_path):
    dm = make_dm(root, tmp_path, aug={**TRANSFORM, "extra": 6})
    base = make_dm(root, tmp_path)
    assert len(dm.datasets["train"]) == len(base.datasets["train"]) + 6
    extra = dm.datasets["train"][len(dm.datasets["train"]) - 1]
    assert extra["image"].shape == (4, 16, 16) and extra["label"].dtype == torch.int64
    assert set(extra["seg"].unique().tolist()) <= {0, 1, 2, 3}
    assert torch.equal(extra["label"], (extra["seg"] > 0).long())
    again = make_dm(root, tmp_path, aug=instantiate({**TRANSFORM, "extra": 6}))
    assert torch.equal(again.datasets["train"][len(again.datasets["train"]) - 1]["image"], extra["image"])
    none = make_dm(root, tmp_path, aug={"_target_": "synthmed.augment.NoAugment", "name": "none", "extra": 0,
                                        "replace_real": False})
    assert len(none.datasets["train"]) == len(base.datasets["train"])


def test_transform_aug_generic_rgb():
    items = [{"image": torch.rand(3, 16, 16), "label": (torch.rand(16, 16) > 0.5).long()} for _ in range(3)]
    out = instantiate({**TRANSFORM, "extra": 4}).extra_samples(items, seed=0)
    assert len(out) == 4 and out[0]["image"].shape == (3, 16, 16) and out[0]["label"].shape == (16, 16)
    assert set(out[0]["label"].unique().tolist()) <= {0, 1}


def test_invalid_subject_raises_or_is_skipped(tmp_path):
    root = tmp_path / "root"
    for i in range(4):
        write_subject(root, f"S{i}", seed=i)
    write_subject(root, "Broken", skip=("t2",))
    with pytest.raises(FileNotFoundError, match="Broken.*t2"):  # named by the stage, before anything is cached
        make_dm(root, tmp_path / "a")
    with pytest.warns(UserWarning, match=r"data.cache.skip_invalid=true: skipped 1 invalid subject(.|\n)*Broken"):
        dm = make_dm(root, tmp_path / "b", skip_invalid=True)
    assert "Broken" not in sum(dm.splits.values(), [])


def test_tumour_slices_show_tumour_at_the_training_size(tmp_path):
    """A tumour of one voxel vanishes when 32 px become 8: that slice is tumour-free at the size the
    model sees, so it is neither served as a tumour slice nor counted as one."""
    import nibabel as nib

    root = tmp_path / "root"
    for i in range(4):
        write_subject(root, f"S{i}", seed=i, tumour_slices=(4, 8))
    seg_file = root / "S0" / "S0_seg.nii.gz"
    seg = np.asarray(nib.load(str(seg_file)).dataobj).copy()
    seg[16, 16, 10] = 2  # nearest-exact 32 -> 8 samples rows/columns 2, 6, ..., 30: never 16
    nib.save(nib.Nifti1Image(seg, np.eye(4)), str(seg_file))
    dm = make_dm(root, tmp_path / "data", image_size=8, val_fraction=0.25, test_fraction=0.25)
    for split, ds in dm.datasets.items():
        assert all(ds[i]["seg"].any() for i in range(len(ds))), split
        assert all(ds[i]["slice"] in range(4, 8) for i in range(len(ds))), split
    cached = slices_mod._CachedSubject(dm.cache / "S0", "S0")
    assert 10 in cached.slices.tolist() and not cached.tumour[cached.slices.tolist().index(10)]


def test_empty_fraction_is_served_or_refused(root, tmp_path):
    dm = make_dm(root, tmp_path, empty_fraction=0.5)
    for split, ds in dm.datasets.items():
        with_tumour = sum(int(ds[i]["seg"].any()) for i in range(len(ds)))
        assert with_tumour == len(ds) - with_tumour, split  # half and half, val and test included
    with pytest.raises(ValueError, match=r"data.empty_fraction=0.6 must be in \[0, 0.5\]"):
        BratsSliceDataModule(root=str(root), cache=str(root), **{**DM_ARGS, "empty_fraction": 0.6})


def test_extra_samples_of_the_wrong_shape_fail_naming_the_regime(root, tmp_path):
    class ThreeChannels(TransformAugmenter):  # e.g. a generator trained for other modalities
        name = "three_channels"

        def extra_samples(self, dataset, seed=0):
            return [{"image": torch.zeros(3, 16, 16), "seg": torch.zeros(16, 16), "brain": torch.ones(1, 16, 16)}]

    with pytest.raises(ValueError, match=r"aug=three_channels: extra sample 0 has image shape \(3, 16, 16\), "
                                         r"the real slices \(4, 16, 16\)"):
        make_dm(root, tmp_path, aug=ThreeChannels(**{**TRANSFORM_ARGS, "extra": 1, "name": "three_channels"}))
