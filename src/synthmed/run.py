"""The runner: one job of any experiment. Seed, instantiate, fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from synthmed import __version__
from synthmed.utils import atomic_write_json, atomic_write_text, git_commit, to_plain

log = logging.getLogger(__name__)


def _hydra_info() -> tuple[list[str], str | None]:
    """The job's command-line overrides, and the sweep's name when this job is part of a multirun."""
    if not HydraConfig.initialized():
        return [], None
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    group = Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None
    return overrides, group


def run_name(cfg: DictConfig, overrides: list[str]) -> str:
    """`<experiment>` plus the overrides that make this job different, e.g. `colon_cls seed=1 model.lr=3e-4`."""
    shown = [o for o in overrides if not o.startswith(("experiment=", "paths.", "hydra"))]
    return " ".join([str(cfg.name), *shown])


def _instantiate_group(node: DictConfig | None, **extra_for: dict[str, Any]) -> list[Any]:
    objects = []
    for key, sub in (node or {}).items():
        if isinstance(sub, DictConfig) and "_target_" in sub:
            objects.append(instantiate(sub, **extra_for.get(key, {})))
    return objects


def _finish_wandb(failed: bool) -> None:
    """Close the W&B run of this job, also when it failed, so runs never leak into the next job."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def _log_analysis(cfg: DictConfig, numbers: dict[str, float], output_dir: Path, name: str, group: str | None) -> None:
    """An analysis job (no model) reports to the same loggers as a training job: its config, its numbers,
    and in W&B its pictures (`images/*.png`)."""
    for logger in _instantiate_group(cfg.get("logger"), wandb={"name": name, "group": group}):
        logger.log_hyperparams(to_plain(cfg))
        logger.log_metrics(numbers)
        if type(logger).__name__ == "WandbLogger":
            for png in sorted((output_dir / "images").glob("*.png")):
                logger.log_image(key=f"analysis/{png.stem}", images=[str(png)])
        logger.finalize("success")


def load_pretrained(model: Any, path: str | Path) -> None:
    """Load the weights of a synthmed checkpoint (or a bare state dict) into `model`, safely
    (`weights_only=True`): the fine-tuning step of the colonoscopy study."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained={path} does not exist (a .ckpt written by a synthmed run)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"pretrained={path} does not fit model {type(model).__name__}: {err}") from err
    log.info("loaded pretrained weights from %s", path)


def _scalar(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def run(cfg: DictConfig) -> float | None:
    """Run one job of an experiment and return `cfg.optimized_metric` from its test metrics (or None)."""
    import lightning as L
    import torch

    start = time.time()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    overrides, group = _hydra_info()
    failed = True
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        missing += [key for key in cfg.get("required") or [] if OmegaConf.select(cfg, key) is None]
        if missing:
            raise ValueError(f"{cfg.name} needs a value for {', '.join(missing)}: set it on the command line, "
                             f"e.g. `python -m synthmed experiment={cfg.name} {missing[0]}=...`")
        if cfg.get("threads") is not None:
            if int(cfg.threads) < 1:
                raise ValueError(f"threads={cfg.threads}: give a positive number of torch CPU threads, or null")
            torch.set_num_threads(int(cfg.threads))
        if cfg.seed is not None:
            L.seed_everything(int(cfg.seed), workers=True, verbose=False)

        datamodule = instantiate(cfg.data)
        record: dict[str, Any] = {
            "experiment": cfg.name,
            "seed": cfg.seed,
            "scale": cfg.scale.name,
            "threads": torch.get_num_threads(),
            "cpu_kernels": torch.backends.cpu.get_cpu_capability(),  # AVX2 when pinned (utils.pin_cpu_isa)
            "overrides": overrides,
            "git_commit": git_commit(),
            "synthmed_version": __version__,
        }
        if cfg.get("model") is None:  # a data-only job: colon_render, or an analysis such as brats_embed
            datamodule.prepare_data()
            record["data"] = getattr(datamodule, "describe", dict)()
            if cfg.get("analysis"):
                record["test"] = instantiate(cfg.analysis)(datamodule, output_dir)
                _log_analysis(cfg, record["test"], output_dir, run_name(cfg, overrides), group)
            record.update(status="ok", wall_time_s=round(time.time() - start, 2))
            atomic_write_json(output_dir / "metrics.json", record)
            failed = False
            return None

        model = instantiate(cfg.model)
        if cfg.get("pretrained"):
            load_pretrained(model, cfg.pretrained)
        name = run_name(cfg, overrides)
        logger_extras = {"wandb": {"name": name, "group": group}}
        loggers = _instantiate_group(cfg.get("logger"), **logger_extras)
        callbacks = _instantiate_group(cfg.get("callbacks"))
        trainer: L.Trainer = instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(output_dir)
        )
        hparams = to_plain(cfg)
        for logger in loggers:
            logger.log_hyperparams(hparams)

        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        test_metrics: dict[str, float] = {}
        if cfg.get("test", True) and not trainer.interrupted:
            results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
            test_metrics = {k: _scalar(v) for r in results for k, v in r.items()}

        best_score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
        record.update(
            status="ok",
            test=test_metrics,
            best_val={str(cfg.monitor): _scalar(best_score)} if best_score is not None else {},
            best_checkpoint=best_path or None,
            epochs=trainer.current_epoch,
            steps=trainer.global_step,
            wall_time_s=round(time.time() - start, 2),
        )
        atomic_write_json(output_dir / "metrics.json", record)
        log.info("metrics written to %s", output_dir / "metrics.json")
        failed = False
        metric = cfg.get("optimized_metric")
        if metric:
            if metric not in test_metrics:
                raise KeyError(f"optimized_metric={metric!r} is not among the test metrics {sorted(test_metrics)}")
            value = test_metrics[metric]
            return value if math.isfinite(value) else None
        return None
    except BaseException:
        # The sweep report lists this job as failed with the reason; metrics.json is never written half.
        atomic_write_text(output_dir / "error.txt", traceback.format_exc())
        raise
    finally:
        _finish_wandb(failed)
        os.environ.pop("WANDB_RUN_ID", None)
