"""The runner: one job of any experiment. Seed, instantiate, fit, test the best checkpoint, write metrics.json.
A test-only job (`train: false`, e.g. experiment=colon_eval) loads the weights of `ckpt` and tests them instead."""

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
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from synthmed import __version__, artifacts, tracking
from synthmed.utils import atomic_write_json, atomic_write_text, cpu_model, git_commit, to_plain

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


def _log_analysis(loggers: list[Any], params: dict[str, Any], numbers: dict[str, float], output_dir: Path) -> None:
    """A job without a model (a stage or an analysis) reports to the same loggers as a training job: its
    config, its numbers, and in W&B its pictures (`images/*.png`)."""
    for logger in loggers:
        logger.log_hyperparams(params)
        if numbers:
            logger.log_metrics(numbers)
        if type(logger).__name__ == "WandbLogger":
            for png in sorted((output_dir / "images").glob("*.png")):
                logger.log_image(key=f"analysis/{png.stem}", images=[str(png)])
        logger.finalize("success")


def local_checkpoint(key: str, value: Any) -> Path:
    """The checkpoint file named by config key `key`. Only local files: a URL would be fetched and unpickled
    by Lightning without `weights_only`, so a crafted file could run code; refused with how to proceed."""
    text = str(value)
    if "://" in text:
        raise ValueError(f"{key}={text} is a URL: synthmed loads checkpoints only from local files, and only "
                         f"their weights (weights_only=True). Download it first, check where it comes from, "
                         f"and pass the local path")
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"{key}={path} does not exist (a .ckpt written by a synthmed run)")
    return path


def _trained_config(path: Path) -> tuple[DictConfig | None, Path]:
    """The config of the run that wrote checkpoint `path` (<run dir>/.hydra/config.yaml beside
    <run dir>/checkpoints/*.ckpt) and that file's path; None when it is not there or does not load."""
    config = path.resolve().parent.parent / ".hydra" / "config.yaml"
    try:
        return OmegaConf.load(config), config
    except Exception:  # a checkpoint moved away from its run, or a broken file: nothing to compare with
        return None, config


def _plain_value(config: DictConfig, key: str) -> Any:
    """`key` of `config`, resolved within it and plain (a list, not a ListConfig); None if absent or unresolvable."""
    value = OmegaConf.select(config, key, throw_on_resolution_failure=False)
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _trained_image_size(path: Path) -> str:
    """What the run that wrote checkpoint `path` (<run dir>/checkpoints/*.ckpt) had as data.image_size, as a hint
    for an error message; empty when that run's config is not beside it."""
    trained, config = _trained_config(path)
    size = _plain_value(trained, "data.image_size") if trained is not None else None
    return f"; its run ({config.parent.parent}) had data.image_size={size}" if size is not None else ""


def _check_trained_like(cfg: DictConfig, path: Path, trained_config: tuple[DictConfig | None, Path],
                        key: str = "ckpt") -> None:
    """The keys `cfg.ckpt_matches` (e.g. data.modalities, data.target, data.image_size: what the weights cannot
    tell, since a mismatch there loads without error and predicts nonsense) must be those of the run that trained
    checkpoint `path`, read from its config beside it. One ValueError naming every differing key; a warning
    when that config is not there to compare with. `trained_config`: `_trained_config(path)`; `key`: the config
    key that names the checkpoint (ckpt, pretrained), for the messages."""
    keys = list(cfg.get("ckpt_matches") or [])
    if not keys:
        return
    trained, config = trained_config
    if trained is None:
        log.warning("%s=%s: no config of the run that trained it at %s, so %s are not checked: they must be "
                    "those it was trained with", key, path, config, ", ".join(keys))
        return
    mine = {k: _plain_value(cfg, k) for k in keys}
    theirs = {k: _plain_value(trained, k) for k in keys}
    differ = [k for k in keys if mine[k] != theirs[k]]
    run_dir, experiment = config.parent.parent, trained.get("name")
    lacking = [k for k in differ if theirs[k] is None]
    if lacking:
        raise ValueError(f"{key}={path} comes from a run of experiment={experiment} ({run_dir}) that has no "
                         f"{', '.join(lacking)}: not a checkpoint {cfg.name} can use")
    if differ:
        scale = _plain_value(trained, "scale.name")
        scale_hint = f" (it ran at scale={scale}: scale={scale} gives its sizes)" if scale != cfg.scale.name else ""
        raise ValueError(f"{key}={path} was trained (run {run_dir}, experiment={experiment}) "
                         f"with {', '.join(f'{k}={theirs[k]}' for k in differ)}, but this job has "
                         f"{', '.join(f'{k}={mine[k]}' for k in differ)}: set "
                         f"{' '.join(f'{k}={_override(theirs[k])}' for k in differ)}{scale_hint}")


def _override(value: Any) -> str:
    """`value` as written on the command line: [flair,t2] for a list."""
    return f"[{','.join(str(v) for v in value)}]" if isinstance(value, list) else str(value)


def load_weights(model: Any, key: str, value: Any) -> Path:
    """Load the weights of the synthmed checkpoint (or bare state dict) named by config key `key` into `model`,
    safely (`weights_only=True`), all keys and shapes matching. Errors name the key and the file. Returns the path."""
    import torch

    path = local_checkpoint(key, value)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{key}={path} does not load as a checkpoint of weights (weights_only=True): {err}") from err
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{key}={path} holds no state dict (a .ckpt written by a synthmed run)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        hint = (" (a checkpoint of another model, or one trained at another image size: set the scale or "
                f"data.image_size it was trained with{_trained_image_size(path)})")
        raise ValueError(f"{key}={path} does not fit model {type(model).__name__}{hint}: {err}") from err
    log.info("loaded the weights of %s=%s", key, path)
    return path


def load_pretrained(model: Any, path: str | Path) -> None:
    """Load the weights of a synthmed checkpoint into `model` (`load_weights` of key `pretrained`): the
    fine-tuning step of the colonoscopy study."""
    load_weights(model, "pretrained", path)


def _scalar(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def _check_test_only_keys(cfg: DictConfig) -> None:
    """`ckpt` is the checkpoint a test-only job (`train: false`) tests, and nothing else: refuse either half alone.
    For a test-only job, check `ckpt_matches` and take `model.net` from the checkpoint's run (`net_from_ckpt`); a
    training job that starts from `pretrained` weights (colon_finetune) gets the same two for that checkpoint."""
    if cfg.train:
        if cfg.get("ckpt"):
            raise ValueError(f"ckpt={cfg.ckpt} names the checkpoint of a test-only job (train=false, e.g. "
                             f"experiment=colon_eval); {cfg.name} trains: start from weights with pretrained=, "
                             f"resume with ckpt_path=")
        key = "pretrained" if cfg.get("pretrained") else None  # fine-tuning: the same checks for the start weights
    elif not cfg.get("ckpt"):
        raise ValueError(f"{cfg.name} tests a trained model (train=false): set ckpt=<run dir>/checkpoints/best.ckpt")
    else:
        key = "ckpt"
    if key is None or not (cfg.get("ckpt_matches") or cfg.get("net_from_ckpt")):
        return
    path = local_checkpoint(key, cfg[key])
    trained = _trained_config(path)  # the training run's config, read once for both
    _check_trained_like(cfg, path, trained, key)  # fail before any data is read
    _net_from_checkpoint(cfg, path, trained, key)


def _net_from_checkpoint(cfg: DictConfig, path: Path, trained_config: tuple[DictConfig | None, Path],
                         key: str = "ckpt") -> None:
    """A test-only job with `net_from_ckpt: true` builds `model.net` as the run that trained checkpoint `path`
    built it (its resolved `model.net`, from that run's config beside the checkpoint, merged over the job's own so
    a knob added since that run keeps its default), so any architecture its experiment chose (e.g.
    colon_cls_varied's) loads without restating its knobs; without that config, the job's own model.net.
    `trained_config`: `_trained_config(path)`."""
    if not cfg.get("net_from_ckpt"):
        return
    trained, config = trained_config
    net = _plain_value(trained, "model.net") if trained is not None else None
    if not isinstance(net, dict):
        log.warning("%s=%s: no model.net in %s; the job's own model.net is used", key, path, config)
        return
    with open_dict(cfg):
        cfg.model.net = OmegaConf.merge(cfg.model.net, net)
    log.info("model.net as the run that trained %s built it (%s): %s", key, config, net.get("_target_"))


def _test_before(cfg: DictConfig, model: Any, datamodule: Any, loggers: list[Any], output_dir: Path) -> dict[str, float]:
    """Test the starting weights (the pretrained ones, when fine-tuning) on the same test split the fitted model
    is tested on, with a trainer of its own (files under `<output dir>/test_before/`: its predictions, its
    confusion matrix), and return the metrics renamed test/* -> test_before/*. The fitted model is the same as
    without this test."""
    tester = instantiate(cfg.trainer, callbacks=[], logger=False, enable_checkpointing=False,
                         default_root_dir=str(output_dir / "test_before"))
    import torch

    with torch.random.fork_rng(devices=[]):  # the test loader draws a seed: fitting stays as without this test
        results = tester.test(model, datamodule=datamodule, verbose=False)
    before = {k.replace("test/", "test_before/", 1): _scalar(v) for r in results for k, v in r.items()}
    for logger in loggers:
        logger.log_metrics(before, step=0)
    log.info("before fitting: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(before.items())))
    return before


def _optimized(cfg: DictConfig, test_metrics: dict[str, float], best_val: dict[str, float]) -> float | None:
    """`cfg.optimized_metric` for a sweeper: a test metric, or the monitored validation metric (tuning that leaves
    the test set unseen); None when there is none or it is not finite."""
    metric = cfg.get("optimized_metric")
    if not metric:
        return None
    chosen = {**test_metrics, **best_val}
    if metric not in chosen:
        raise KeyError(f"optimized_metric={metric!r} is neither a test metric {sorted(test_metrics)} nor "
                       f"the monitored validation metric {cfg.monitor!r}")
    value = chosen[metric]
    return value if math.isfinite(value) else None


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
        _check_test_only_keys(cfg)
        if cfg.get("threads") is not None:
            if int(cfg.threads) < 1:
                raise ValueError(f"threads={cfg.threads}: give a positive number of torch CPU threads, or null")
            torch.set_num_threads(int(cfg.threads))
        if cfg.seed is not None:
            L.seed_everything(int(cfg.seed), workers=True, verbose=False)

        name = run_name(cfg, overrides)
        # the run's loggers exist before its artefacts: a stage that trains (the GAN generators) logs to them
        loggers = _instantiate_group(cfg.get("logger"),
                                     wandb={"name": name, "group": group, "tags": tracking.run_tags(overrides)})
        made = artifacts.resolve(cfg, context={"loggers": loggers})
        resolved = {key: str(OmegaConf.select(cfg, key)) for key in made}
        if resolved:
            log.info("artefacts: %s", ", ".join(f"{key}={path}" for key, path in resolved.items()))
        tracking.declare_artifacts(loggers, resolved, since=start)
        datamodule = instantiate(cfg.data)
        record: dict[str, Any] = {
            "experiment": cfg.name,
            "seed": cfg.seed,
            "scale": cfg.scale.name,
            "threads": torch.get_num_threads(),
            "cpu_kernels": torch.backends.cpu.get_cpu_capability(),  # AVX2 when pinned (utils.pin_cpu_isa)
            "cpu_model": cpu_model(),  # where it ran: other CPU models may round differently (docs/running.md)
            "overrides": overrides,
            "git_commit": git_commit(),
            "synthmed_version": __version__,
        }
        if cfg.get("model") is None:  # a stage (colon_render, brats_phantom) or an analysis such as brats_embed
            datamodule.prepare_data()
            record["data"] = getattr(datamodule, "describe", dict)()
            record["artifacts"] = resolved
            if cfg.get("analysis"):
                record["test"] = instantiate(cfg.analysis)(datamodule, output_dir)
            _log_analysis(loggers, to_plain(cfg), record.get("test", {}), output_dir)
            record.update(status="ok", wall_time_s=round(time.time() - start, 2))
            atomic_write_json(output_dir / "metrics.json", record)
            failed = False
            return None

        model = instantiate(cfg.model)
        train = bool(cfg.train)
        if not train:
            record["checkpoint"] = str(load_weights(model, "ckpt", cfg.ckpt))
        elif cfg.get("pretrained"):
            load_pretrained(model, cfg.pretrained)
        callbacks = _instantiate_group(cfg.get("callbacks"))
        trainer: L.Trainer = instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(output_dir)
        )
        for logger in loggers:
            logger.log_hyperparams(to_plain(cfg))
        tracking.define_summaries(loggers, cfg.get("monitor"), str(cfg.get("monitor_mode", "min")))

        if not train:  # test only: every frame of the test split, predictions in predictions.csv
            results = trainer.test(model, datamodule=datamodule, verbose=False)
            test_metrics = {k: _scalar(v) for r in results for k, v in r.items()}
            record.update(status="ok", test=test_metrics, data=getattr(datamodule, "describe", dict)(),
                          wall_time_s=round(time.time() - start, 2))
            atomic_write_json(output_dir / "metrics.json", record)
            log.info("metrics written to %s", output_dir / "metrics.json")
            failed = False
            return _optimized(cfg, test_metrics, {})

        before = _test_before(cfg, model, datamodule, loggers, output_dir) if cfg.get("test_before") else {}
        resume = cfg.get("ckpt_path")
        if resume:
            resume = str(local_checkpoint("ckpt_path", resume))
            try:  # read once with weights_only first: a file that would run code is refused before Lightning opens it
                torch.load(resume, map_location="cpu", weights_only=True)
            except Exception as err:
                raise ValueError(f"ckpt_path={resume} does not load as weights only (weights_only=True): {err}") from err
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
        best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        test_metrics: dict[str, float] = {}
        if cfg.get("test", True) and not trainer.interrupted:
            results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
            test_metrics = {k: _scalar(v) for r in results for k, v in r.items()}
            if cfg.get("analysis"):  # e.g. colon_cls's colour-only baseline on the same test split
                numbers = instantiate(cfg.analysis)(datamodule, output_dir)
                for logger in loggers:
                    logger.log_metrics(numbers)
                test_metrics.update(numbers)
        test_metrics = {**before, **test_metrics}

        best_score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
        tracking.log_checkpoint(loggers, best_path, f"{cfg.name}-best", {"monitor": cfg.get("monitor"),
                                "score": _scalar(best_score) if best_score is not None else None, "test": test_metrics})
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
        return _optimized(cfg, test_metrics, record["best_val"])
    except BaseException:
        # The sweep report lists this job as failed with the reason; metrics.json is never written half.
        atomic_write_text(output_dir / "error.txt", traceback.format_exc())
        raise
    finally:
        _finish_wandb(failed)
        os.environ.pop("WANDB_RUN_ID", None)
