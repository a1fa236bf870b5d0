"""experiment=colon_eval: a trained lesion classifier tested on every frame of a folder, no training; and
colon_finetune's test of the pretrained weights on the same test split before fitting (test_before/*)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_synthmed
from PIL import Image

from synthmed.analysis.errors import error_breakdown
from synthmed.analysis.errors import main as errors_main
from synthmed.data.colon import read_frame_index
from synthmed.run import run
from synthmed.utils import compose_config

CI = ["scale=ci", "logger=csv"]
REAL_SIZE = (90, 72)  # width, height: the 5:4 frames of a real colonoscope (576x720), small


@pytest.fixture(scope="module")
def classifier_ckpt(frames_dir, tmp_path_factory) -> Path:
    """A real colon_cls checkpoint: a tiny training run (scale=ci) on the framework's drawn frames."""
    out = tmp_path_factory.mktemp("cls") / "run"
    run_synthmed(["experiment=colon_cls", *CI, f"data.root={frames_dir}", f"hydra.run.dir={out}"], cwd=out.parent)
    return out / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def real_folder(frames_dir, tmp_path_factory) -> Path:
    """The drawn frames as real data comes: ImageFolder (normal/, lesion/), PNGs of another size and shape."""
    root = tmp_path_factory.mktemp("real") / "folder"
    for row in read_frame_index(frames_dir)[1]:
        target = root / ("lesion" if row["label"] else "normal")
        target.mkdir(parents=True, exist_ok=True)
        with Image.open(row["image"]) as im:
            im.resize(REAL_SIZE, Image.BILINEAR).save(target / row["image"].name)
    return root


@pytest.fixture(scope="module")
def eval_run(classifier_ckpt, real_folder) -> Path:
    """The job of `python -m synthmed experiment=colon_eval ckpt=... data.root=<ImageFolder>`: its run dir."""
    out = real_folder.parent / "eval"
    run_in_process(["experiment=colon_eval", *CI, f"ckpt={classifier_ckpt}", f"data.root={real_folder}"], out)
    return out


def read_predictions(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def eval_in_process(tmp_path: Path, *overrides: str) -> dict:
    """colon_eval through the runner in this process (no interpreter start): its metrics.json."""
    out = tmp_path / "eval"
    run_in_process(["experiment=colon_eval", *CI, *overrides], out)
    return json.loads((out / "metrics.json").read_text())


def run_in_process(overrides: list[str], out: Path) -> None:
    """The job `python -m synthmed <overrides>` runs, in this process; torch's global switches are put back."""
    cfg = compose_config(overrides, output_dir=out)
    del cfg.hydra  # a job's config has no hydra node; HydraConfig holds it
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        run(cfg)
    finally:  # the trainer (deterministic: true) switches deterministic algorithms on for the whole process
        torch.use_deterministic_algorithms(deterministic)


def test_eval_tests_every_frame_of_an_imagefolder(eval_run, classifier_ckpt, real_folder):
    metrics = json.loads((eval_run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["checkpoint"] == str(classifier_ckpt)
    assert "best_val" not in metrics and not (eval_run / "checkpoints").exists()  # nothing was trained
    assert metrics["data"]["layout"] == "imagefolder"
    assert metrics["data"]["splits"]["test"] == {"frames": 40, "lesion": 20, "normal": 20}
    preds = read_predictions(eval_run / "predictions.csv")
    files = sorted(real_folder.glob("*/*.png"))
    assert sorted(Path(r["path"]) for r in preds) == files  # every frame once, no split
    for r in preds:
        assert r["id"] == f"{Path(r['path']).parent.name}/{Path(r['path']).stem}"
        assert int(r["label"]) == (Path(r["path"]).parent.name == "lesion")
        assert int(r["predicted"]) == (float(r["score"]) >= 0.5) and 0.0 <= float(r["score"]) <= 1.0
    # the logged metrics are those of the written predictions
    lesion = [r for r in preds if r["label"] == "1"]
    normal = [r for r in preds if r["label"] == "0"]
    test = metrics["test"]
    assert test["test/acc"] == pytest.approx(sum(r["label"] == r["predicted"] for r in preds) / 40)
    assert test["test/recall"] == pytest.approx(sum(r["predicted"] == "1" for r in lesion) / 20)
    assert test["test/specificity"] == pytest.approx(sum(r["predicted"] == "0" for r in normal) / 20)
    pairs = [(float(a["score"]) > float(b["score"])) + 0.5 * (a["score"] == b["score"]) for a in lesion for b in normal]
    assert test["test/auroc"] == pytest.approx(sum(pairs) / len(pairs), abs=0.01)  # scores rounded to 6 places


def test_eval_on_lesion_frames_only_reports_recall_not_auroc(classifier_ckpt, frames_dir, tmp_path):
    kvasir = tmp_path / "kvasir"  # Kvasir-SEG layout: every mask has pixels, so every frame is a lesion frame
    for row in read_frame_index(frames_dir)[1]:
        if row["label"]:
            for sub, src in (("images", row["image"]), ("masks", row["mask"])):
                (kvasir / sub).mkdir(parents=True, exist_ok=True)
                shutil.copy(src, kvasir / sub / src.name)
    metrics = eval_in_process(tmp_path, f"ckpt={classifier_ckpt}", f"data.root={kvasir}")
    assert metrics["data"]["splits"]["test"] == {"frames": 20, "lesion": 20, "normal": 0}
    preds = read_predictions(tmp_path / "eval" / "predictions.csv")
    assert len(preds) == 20 and {r["label"] for r in preds} == {"1"}
    test = metrics["test"]
    assert test["test/recall"] == pytest.approx(sum(r["predicted"] == "1" for r in preds) / 20)
    assert test["test/acc"] == pytest.approx(test["test/recall"])
    assert "test/auroc" not in test and "test/specificity" not in test  # undefined without normal frames


def test_eval_predictions_of_a_rendered_dataset_break_down_by_manifest(classifier_ckpt, frames_dir, tmp_path, capsys):
    metrics = eval_in_process(tmp_path, f"ckpt={classifier_ckpt}", f"data.root={frames_dir}")
    errors_main([str(tmp_path / "eval"), str(frames_dir)])  # the CLI finds a test-only run's predictions.csv
    assert "| all test frames (accuracy) | 40 |" in capsys.readouterr().out
    breakdown = error_breakdown(tmp_path / "eval" / "predictions.csv", frames_dir / "manifest.csv")
    assert breakdown["accuracy"]["n"] == 40
    assert breakdown["accuracy"]["rate"] == pytest.approx(metrics["test"]["test/acc"])
    assert breakdown["lesion_recall"]["rate"] == pytest.approx(metrics["test"]["test/recall"])
    assert breakdown["normal_specificity"]["rate"] == pytest.approx(metrics["test"]["test/specificity"])


def test_eval_errors_name_the_key_folder_and_file(classifier_ckpt, real_folder, tmp_path):
    with pytest.raises(ValueError, match=r"colon_eval needs a value for ckpt: .* ckpt=\.\.\."):
        eval_in_process(tmp_path, f"data.root={real_folder}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"{empty} is not a frames dataset"):
        eval_in_process(tmp_path, f"ckpt={classifier_ckpt}", f"data.root={empty}")
    (empty / "lesion").mkdir()
    with pytest.raises(ValueError, match=f"{empty} holds no frames"):
        eval_in_process(tmp_path, f"ckpt={classifier_ckpt}", f"data.root={empty}")
    other = tmp_path / "other.ckpt"  # the checkpoint of another model
    torch.save({"state_dict": {"encoder.weight": torch.zeros(4, 3)}}, other)
    with pytest.raises(ValueError, match=f"ckpt={other} does not fit model LesionClassifier"):
        eval_in_process(tmp_path, f"ckpt={other}", f"data.root={real_folder}")
    with pytest.raises(ValueError, match="names the checkpoint of a test-only job"):  # ckpt= on a training job
        run_in_process(["experiment=colon_cls", *CI, f"ckpt={classifier_ckpt}", f"data.root={real_folder}"],
                       tmp_path / "cls")


def test_finetune_tests_the_pretrained_model_on_its_test_split_first(eval_run, classifier_ckpt, real_folder,
                                                                     tmp_path):
    out = tmp_path / "ft"
    run_synthmed(["experiment=colon_finetune", *CI, f"data.root={real_folder}", f"pretrained={classifier_ckpt}",
                  f"hydra.run.dir={out}"], cwd=tmp_path)
    test = json.loads((out / "metrics.json").read_text())["test"]
    after = {k.split("/")[1] for k in test if k.startswith("test/")}
    before = {k.split("/")[1] for k in test if k.startswith("test_before/")}
    assert after == before and {"acc", "auroc", "recall", "specificity"} <= after
    first = read_predictions(out / "test_before" / "test_predictions.csv")
    last = read_predictions(out / "test_predictions.csv")
    assert sorted(r["id"] for r in first) == sorted(r["id"] for r in last)  # one test split for both
    assert test["test_before/acc"] == pytest.approx(sum(r["label"] == r["predicted"] for r in first) / len(first))
    # before fitting, the model is the pretrained one: its predictions are colon_eval's on the same frames
    evaluated = {r["id"]: r for r in read_predictions(eval_run / "predictions.csv")}
    for r in first:
        assert r["predicted"] == evaluated[r["id"]]["predicted"]
        assert float(r["score"]) == pytest.approx(float(evaluated[r["id"]]["score"]), abs=1e-5)


def test_varied_classifier_learns_masks_and_evaluates_without_restating_its_net(frames_dir, real_folder, tmp_path):
    """colon_cls_varied trains the mask head beside the label; colon_eval builds that net from the checkpoint's
    run config (net_from_ckpt), so the command line names no architecture knob."""
    out = tmp_path / "varied"
    run_synthmed(["experiment=colon_cls_varied", *CI, f"data.root={frames_dir}", f"hydra.run.dir={out}"], cwd=tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["experiment"] == "colon_cls_varied"
    assert metrics["test"]["test/mask_loss"] > 0 and 0 <= metrics["test"]["test/acc"] <= 1
    ckpt = out / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state["net.mask_head.weight"].shape == (1, 128, 1, 1)
    assert any(k.startswith("net.features.") and k.endswith("running_mean") for k in state)  # batch norm
    evaluated = eval_in_process(tmp_path, f"ckpt={ckpt}", f"data.root={real_folder}")
    assert evaluated["status"] == "ok" and evaluated["checkpoint"] == str(ckpt)
    rows = read_predictions(tmp_path / "eval" / "predictions.csv")
    assert len(rows) == len(read_frame_index(real_folder)[1])  # an ImageFolder has no masks: labels only
    with pytest.raises(ValueError, match="ckpt="):  # the job's own (study) net does not fit those weights
        eval_in_process(tmp_path / "own", f"ckpt={ckpt}", f"data.root={real_folder}", "net_from_ckpt=false")
    # fine-tuning on real frames starts from the same checkpoint, its net built the same way (no knob restated)
    tuned = tmp_path / "ft"
    run_in_process(["experiment=colon_finetune", *CI, f"data.root={real_folder}", f"pretrained={ckpt}"], tuned)
    metrics = json.loads((tuned / "metrics.json").read_text())
    assert metrics["status"] == "ok" and "test_before/acc" in metrics["test"]
    tuned_state = torch.load(tuned / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert set(tuned_state) == set(state)  # the varied net, mask head and batch norm included
    with pytest.raises(ValueError, match=r"pretrained=.* with data.image_size=32, but this job has data.image_size=48"):
        run_in_process(["experiment=colon_finetune", *CI, f"data.root={real_folder}", f"pretrained={ckpt}",
                        "data.image_size=48"], tmp_path / "ft48")


def test_checkpoint_of_a_run_older_than_the_net_knobs_still_evaluates(classifier_ckpt, real_folder, tmp_path):
    """net_from_ckpt merges the checkpoint's run's model.net over the job's own: a run whose config predates the
    convs / batch_norm / pool / mask_head knobs gets their (study) defaults, and its weights load."""
    import yaml

    run_dir = tmp_path / "old_run"
    shutil.copytree(classifier_ckpt.parent.parent, run_dir)
    config = run_dir / ".hydra" / "config.yaml"
    saved = yaml.safe_load(config.read_text())
    for key in ("convs", "batch_norm", "pool", "mask_head"):
        del saved["model"]["net"][key]
    config.write_text(yaml.safe_dump(saved))
    evaluated = eval_in_process(tmp_path, f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", f"data.root={real_folder}")
    assert evaluated["status"] == "ok"
    assert len(read_predictions(tmp_path / "eval" / "predictions.csv")) == len(read_frame_index(real_folder)[1])
