"""U-Net and SegmentationModule: shapes, learning a toy task, RGB frames, checkpoints."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from synthmed.models.nets.unet import UNet
from synthmed.models.segmenter import SegmentationModule, soft_dice_loss


@pytest.mark.parametrize("cin,cout,depth", [(4, 2, 2), (3, 2, 3), (4, 4, 1)])
def test_unet_shapes(cin, cout, depth):
    net = UNet(cin, cout, base_channels=4, depth=depth, batch_norm=True)
    assert net(torch.randn(2, cin, 32, 32)).shape == (2, cout, 32, 32)


def test_unet_rejects_bad_size():
    with pytest.raises(ValueError, match="divisible"):
        UNet(1, 2, base_channels=2, depth=3, batch_norm=True)(torch.randn(1, 1, 20, 20))


def test_dice_loss_perfect_prediction_is_zero():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:5, 2:5] = 1
    logits = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(logits, target) < 1e-3


def toy_items(n=32, size=16, channels=3):
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        label = torch.zeros(size, size, dtype=torch.long)
        x, y = torch.randint(2, size - 6, (2,), generator=g).tolist()
        label[x:x + 5, y:y + 5] = 1
        image = torch.randn(channels, size, size, generator=g) * 0.2 + label.float()[None]
        items.append({"image": image, "label": label})
    return items


def segmenter(compose_config, *overrides: str) -> SegmentationModule:
    """The segmenter (U-Net inside) as an experiment's config builds it."""
    return instantiate(compose_config(["scale=ci", *overrides]).model)


def test_segmenter_learns_binary_rgb_and_checkpoint_loads(compose_config, tmp_path):
    L.seed_everything(0, verbose=False)
    model = segmenter(compose_config, "experiment=colon_seg", "model.lr=1e-2", "model.net.base_channels=4",
                      "model.net.depth=2")
    loader = DataLoader(toy_items(24), batch_size=8)
    trainer = L.Trainer(max_epochs=5, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path), accelerator="cpu")
    trainer.fit(model, loader, loader)
    metrics = trainer.test(model, loader, verbose=False)[0]
    assert metrics["test/iou_fg"] > 0.5 and 0 <= metrics["test/dice_fg"] <= 1
    assert (tmp_path / "images" / "test_overlay.png").exists()
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["hyper_parameters"]["target"] == "binary"


def test_segmenter_multiclass_regions(compose_config):
    model = segmenter(compose_config, "experiment=brats_seg", "data.target=multiclass", "model.net.out_channels=4")
    assert set(model.regions) == {"wt", "tc", "et"}
    with pytest.raises(Exception, match="model.target='multiclass' needs model.net.out_channels=4"):
        segmenter(compose_config, "experiment=brats_seg", "data.target=multiclass")  # Hydra wraps the ValueError
