"""LesionCNN and LesionClassifier: shapes, loss options, freezing, pretrained weights."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from synthmed.run import load_pretrained
from synthmed.utils import compose_config


def make(loss="cross_entropy", freeze=False, size=50):
    """The classifier of `experiment=colon_cls` as its config builds it (the study's sizes)."""
    cfg = compose_config(["experiment=colon_cls", f"data.image_size={size}"])
    return instantiate(cfg.model, loss=loss, freeze_features=freeze)


def test_study_architecture_shapes():
    net = make().net
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128] and all(c.kernel_size == (5, 5) for c in convs)
    assert net.head[1].out_features == 512
    assert net(torch.zeros(3, 3, 50, 50)).shape == (3, 2)
    with pytest.raises(Exception, match="too small"):  # Hydra wraps the net's ValueError
        make(size=4)


def test_batch_norm_knob_adds_a_norm_after_each_conv():
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in make().net.modules())  # the study's net
    cfg = compose_config(["experiment=colon_cls", "data.image_size=96", "model.net.batch_norm=true"])
    net = instantiate(cfg.model).net
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 3
    assert all(m.bias is None for m in net.features if isinstance(m, torch.nn.Conv2d))  # the norm has the shift
    net.train()
    out = net(torch.rand(4, 3, 96, 96))
    assert out.shape == (4, 2) and torch.isfinite(out).all()


def test_pool_knob_and_mask_head_train_where_the_lesion_is():
    with pytest.raises(Exception, match="model.net.pool='sum'"):
        instantiate(compose_config(["experiment=colon_cls", "model.net.pool=sum"]).model)
    with pytest.raises(Exception, match="model.net.mask_head=true"):  # a mask weight needs a mask head (Hydra wraps it)
        instantiate(compose_config(["experiment=colon_cls", "model.mask_weight=1"]).model)
    keys = ["experiment=colon_cls", "data.image_size=48", "model.net.pool=max", "model.net.mask_head=true"]
    torch.manual_seed(0)
    model = instantiate(compose_config([*keys, "model.mask_weight=2"]).model)
    logits, cells = model.net.forward_with_mask(torch.rand(2, 3, 48, 48))
    assert logits.shape == (2, 2) and cells.shape == (2, 6, 6)  # three 2x poolings
    assert model.net(torch.rand(2, 3, 80, 80)).shape == (2, 2)  # a pooled head takes any size
    mask = torch.zeros(2, 48, 48)
    mask[1, 8:14, 30:40] = 1  # lesion in cells (1..1, 3..4) of frame 1
    image = torch.rand(2, 3, 48, 48) - 1.0
    image[:, 1:] += mask[:, None]  # the lesion: greener where the mask is
    batch = {"image": image, "label": torch.tensor([0, 1]), "mask": mask}
    model.train()
    with_mask = model._step(batch, "train")
    plain = model._step({k: v for k, v in batch.items() if k != "mask"}, "train")  # no mask: class loss only
    assert with_mask > plain
    model.zero_grad()
    model._step(batch, "train").backward()
    assert model.net.mask_head.weight.grad.abs().sum() > 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):  # the mask head learns the cells
        opt.zero_grad()
        model._step(batch, "train").backward()
        opt.step()
    model.eval()
    cells = model.net.forward_with_mask(batch["image"])[1].sigmoid()
    assert cells[1, 1, 3:5].min() > 0.5 and cells[0].max() < 0.5


@pytest.mark.parametrize("loss", ["cross_entropy", "mse_softmax"])
def test_losses_are_finite_and_differ(loss):
    torch.manual_seed(0)
    model = make(loss)
    logits = torch.tensor([[2.0, -1.0], [0.0, 0.5]])
    target = torch.tensor([0, 1])
    value = model._loss(logits, target)
    assert torch.isfinite(value)
    if loss == "mse_softmax":
        expected = ((logits.softmax(1) - torch.nn.functional.one_hot(target, 2)) ** 2).mean()
        assert value == pytest.approx(expected.item())
    else:
        assert value == pytest.approx(torch.nn.functional.cross_entropy(logits, target).item())


def test_unknown_loss_is_named():
    with pytest.raises(Exception, match="model.loss='hinge'"):  # Hydra wraps the module's ValueError
        make("hinge")


def test_freeze_features_trains_only_the_head():
    model = make(freeze=True)
    optimizer = model.configure_optimizers()
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in model.net.head.parameters()}


def test_scheduler_knob_decays_the_lr_per_epoch():
    assert isinstance(make().configure_optimizers(), torch.optim.Adam)  # the study: a constant lr, no scheduler
    sched = "{_target_: torch.optim.lr_scheduler.CosineAnnealingLR, _partial_: true, T_max: 4}"
    cfg = compose_config(["experiment=colon_cls", f"model.scheduler={sched}"])
    config = instantiate(cfg.model).configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "epoch"
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(cfg.model.lr) and lrs == sorted(lrs, reverse=True)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to zero at T_max


def test_warmup_scales_the_first_steps_lr_on_top_of_the_scheduler(tmp_path):
    import lightning as L

    assert compose_config(["experiment=colon_cls"]).model.warmup_steps == 64  # scale=paper: one epoch of 64 steps
    assert compose_config(["experiment=colon_cls", "scale=cpu"]).model.warmup_steps == 64  # 4 epochs of 16 steps
    assert compose_config(["experiment=colon_cls", "scale=ci"]).model.warmup_steps == 0
    with pytest.raises(Exception, match="model.warmup_steps=-1"):
        instantiate(compose_config(["experiment=colon_cls", "model.warmup_steps=-1"]).model)
    sched = "{_target_: torch.optim.lr_scheduler.CosineAnnealingLR, _partial_: true, T_max: 2}"
    cfg = compose_config(["experiment=colon_cls", "data.image_size=16", "model.warmup_steps=4", f"model.scheduler={sched}"])
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    frames = [{"image": torch.rand(3, 16, 16), "label": torch.tensor(i % 2)} for i in range(12)]
    seen = []

    class Record(L.Callback):
        def on_before_optimizer_step(self, trainer, module, optimizer):
            seen.append(optimizer.param_groups[0]["lr"])

    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                        default_root_dir=tmp_path)
    trainer.fit(model, torch.utils.data.DataLoader(frames, batch_size=4))  # 3 steps an epoch
    lr, cosine = cfg.model.lr, cfg.model.lr / 2  # the scheduler's lr in epoch 1 (cosine, T_max 2)
    assert seen == pytest.approx([lr / 4, lr / 2, 3 * lr / 4, cosine, cosine, cosine])
    assert model.optimizers().param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # the scheduler's own value


def test_pretrained_round_trip_and_errors(tmp_path):
    source, target = make(), make()
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    load_pretrained(target, path)
    for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="pretrained="):
        load_pretrained(target, tmp_path / "missing.ckpt")
    torch.save({"state_dict": make(size=64).state_dict()}, path)
    with pytest.raises(ValueError, match="does not fit"):
        load_pretrained(target, path)


def test_error_breakdown_groups_frames(tmp_path, capsys):
    from synthmed.analysis.errors import error_breakdown, main

    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "id,label,visible_pixels,lesion.placed,lesion.type\n"
        "a,1,60,1,flat\n"       # small lesion, missed
        "b,1,900,1,sessile\n"   # large lesion, found
        "c,1,150,1,sessile\n"   # found
        "d,0,0,0,flat\n"        # nothing placed, right
        "e,0,0,1,sessile\n"     # placed but hidden, right
        "f,0,20,1,flat\n"       # 20 px below the threshold, called lesion
        "g,0,0,0,flat\n")       # not in the predictions
    preds = tmp_path / "test_predictions.csv"
    preds.write_text("id,label,predicted,score\na,1,0,0.2\nb,1,1,0.9\nc,1,1,0.7\nd,0,0,0.1\ne,0,0,0.3\nf,0,1,0.6\n")
    b = error_breakdown(preds, manifest)
    assert b["accuracy"] == {"n": 6, "correct": 4, "rate": pytest.approx(4 / 6)}
    assert b["lesion_recall"]["rate"] == pytest.approx(2 / 3)
    assert {k: v["correct"] for k, v in b["lesion_recall_by_visible_pixels"].items()} == \
        {"<100": 0, "100-199": 1, "800-1599": 1}
    assert {k: (v["n"], v["correct"]) for k, v in b["lesion_recall_by_type"].items()} == \
        {"flat": (1, 0), "sessile": (2, 2)}
    scenes = {k: (v["n"], v["correct"]) for k, v in b["normal_specificity_by_scene"].items()}
    assert scenes == {"no lesion placed": (1, 1), "lesion hidden (0 px)": (1, 1),
                      "lesion below threshold (1+ px)": (1, 0)}
    (tmp_path / "run").mkdir()
    preds.rename(tmp_path / "run" / "test_predictions.csv")
    main([str(tmp_path / "run"), str(tmp_path)])
    table = capsys.readouterr().out
    assert "| all test frames (accuracy) | 6 | 4 | 0.667 |" in table and "| normal, lesion hidden (0 px) | 1 | 1 | 1.000 |" in table
    (tmp_path / "run" / "test_predictions.csv").write_text("id,label,predicted,score\nzz,1,1,0.9\n")
    with pytest.raises(ValueError, match="not in .*manifest.csv"):
        error_breakdown(tmp_path / "run" / "test_predictions.csv", manifest)


def test_error_breakdown_by_a_manifest_column(tmp_path, capsys):
    """`--by COLUMN=EDGES` bins a numeric column (recall of lesion frames, specificity of normal ones); `--by
    COLUMN` groups by value; a column the manifest lacks, text where edges ask for numbers, and too many values
    without edges are errors that name them."""
    from synthmed.analysis.errors import error_breakdown, main

    manifest = tmp_path / "data" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "id,label,visible_pixels,lesion.redness,clutter.red_patch,lesion.type\n"
        "a,1,500,0.25,0,sessile\n"   # pale-ish, missed
        "b,1,500,0.35,1,sessile\n"   # found
        "c,1,500,0.5,0,sessile\n"    # found
        "d,1,500,0.9,0,sessile\n"    # found
        "e,0,0,,1,\n"                # red patch, called lesion
        "f,0,0,,0,\n"                # right
        "g,0,0,0.7,0,sessile\n")     # right (a lesion drawn, none placed)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "test_predictions.csv").write_text(
        "id,label,predicted,score\na,1,0,0.2\nb,1,1,0.9\nc,1,1,0.7\nd,1,1,0.8\ne,0,1,0.6\nf,0,0,0.1\ng,0,0,0.3\n")
    b = error_breakdown(tmp_path / "run" / "test_predictions.csv", manifest,
                        by={"lesion.redness": (0.2, 0.4, 0.6), "clutter.red_patch": None})
    recall = {k: (v["n"], v["correct"]) for k, v in b["lesion_recall_by"]["lesion.redness"].items()}
    assert recall == {"lesion.redness 0.2..0.4": (2, 1), "lesion.redness 0.4..0.6": (1, 1),
                      "lesion.redness >= 0.6": (1, 1)}
    assert list(recall) == ["lesion.redness 0.2..0.4", "lesion.redness 0.4..0.6", "lesion.redness >= 0.6"]
    normal = {k: (v["n"], v["correct"]) for k, v in b["normal_specificity_by"]["lesion.redness"].items()}
    assert normal == {"lesion.redness empty": (2, 1), "lesion.redness >= 0.6": (1, 1)}
    patch = {k: (v["n"], v["correct"]) for k, v in b["normal_specificity_by"]["clutter.red_patch"].items()}
    assert patch == {"clutter.red_patch = 0": (2, 2), "clutter.red_patch = 1": (1, 0)}
    main([str(tmp_path / "run"), str(tmp_path / "data"), "--by", "lesion.redness=0.2,0.4,0.6",
          "--by", "clutter.red_patch"])
    table = capsys.readouterr().out
    assert "| lesion, lesion.redness 0.2..0.4 | 2 | 1 | 0.500 |" in table
    assert "| normal, clutter.red_patch = 1 | 1 | 0 | 0.000 |" in table
    with pytest.raises(ValueError, match=r"manifest.csv lacks the column\(s\) \['lesion.size_mm'\]"):
        error_breakdown(tmp_path / "run" / "test_predictions.csv", manifest, by={"lesion.size_mm": None})
    with pytest.raises(ValueError, match="'lesion.type' holds 'sessile', not a number"):
        error_breakdown(tmp_path / "run" / "test_predictions.csv", manifest, by={"lesion.type": (0.5,)})
    with pytest.raises(ValueError, match=r"the edges \[0.4, 0.2\] must rise"):
        error_breakdown(tmp_path / "run" / "test_predictions.csv", manifest, by={"lesion.redness": (0.4, 0.2)})
    rows = "".join(f"x{i},1,{100 + i},0.5,0,sessile\n" for i in range(13))
    (tmp_path / "many.csv").write_text(manifest.read_text().splitlines()[0] + "\n" + rows)
    (tmp_path / "many_preds.csv").write_text("id,label,predicted,score\n" + "".join(f"x{i},1,1,0.9\n" for i in range(13)))
    with pytest.raises(ValueError, match=r"'visible_pixels' holds 1\d values .* --by visible_pixels=E1,E2"):
        error_breakdown(tmp_path / "many_preds.csv", tmp_path / "many.csv", by={"visible_pixels": None})
    # by value, numbers sort as numbers (9 before 10), text after them
    few = tmp_path / "few.csv"
    few.write_text(manifest.read_text().splitlines()[0] + "\n" + "".join(
        f"y{i},1,{v},0.5,0,sessile\n" for i, v in enumerate((10, 9, 10))))
    (tmp_path / "few_preds.csv").write_text("id,label,predicted,score\n" + "".join(f"y{i},1,1,0.9\n" for i in range(3)))
    assert list(error_breakdown(tmp_path / "few_preds.csv", few, by={"visible_pixels": None})
                ["lesion_recall_by"]["visible_pixels"]) == ["visible_pixels = 9", "visible_pixels = 10"]
    with pytest.raises(SystemExit):
        main([str(tmp_path / "run"), str(tmp_path / "data"), "--by", "lesion.redness=low,high"])
    assert "the edges must be numbers" in capsys.readouterr().err


def test_a_collapsed_net_is_warned_about_and_counted(tmp_path, caplog):
    """A net whose output no longer depends on the frame (the study's net can die so: docs/render.md) answers one
    class for every test frame: the run says so, and `test/predicted_classes` records it, instead of reporting the
    majority share as if it were accuracy. A folder of one class (lesion frames only) is not such a case."""
    import lightning as L

    model = make()
    last = model.net.head[-1]
    with torch.no_grad():  # the constant net: every frame scores "normal"
        last.weight.zero_()
        last.bias.copy_(torch.tensor([2.0, -2.0]))
    labels = torch.tensor([0, 0, 0, 1, 1, 0, 1, 0])
    frames = [{"image": torch.rand(3, 50, 50) * 2 - 1, "label": label} for label in labels]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    with caplog.at_level("WARNING", logger="synthmed.models.classifier"):
        (metrics,) = trainer.test(model, torch.utils.data.DataLoader(frames, batch_size=4), verbose=False)
    assert metrics["test/predicted_classes"] == 1.0 and metrics["test/acc"] == pytest.approx(5 / 8)
    assert "every one of the 8 test frames was predicted class 0, although they hold 2 classes" in caplog.text
    assert "accuracy 0.625 is that class's share" in caplog.text
    caplog.clear()
    lesions = [f for f in frames if f["label"] == 1]  # a lesion-only folder: one class present, no warning
    with caplog.at_level("WARNING", logger="synthmed.models.classifier"):
        (metrics,) = trainer.test(model, torch.utils.data.DataLoader(lesions, batch_size=4), verbose=False)
    assert metrics["test/predicted_classes"] == 1.0 and metrics["test/recall"] == 0.0
    assert "predicted class" not in caplog.text
