"""The training task: fit, test the best checkpoint, and leave a self-describing run folder."""

from __future__ import annotations

import logging
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from brain_mri.callbacks import EPOCHS_TRAINED, task_callbacks
from brain_mri.checkpoints import AtomicCheckpointIO, load_checkpoint
from brain_mri.errors import BrainMRIError
from brain_mri.launch import instantiate_group, optimized_value
from brain_mri.loggers import TensorBoardLogger
from brain_mri.run_outputs import (
    CHECKPOINT_DIR,
    EPOCH_LOG,
    LAST_CHECKPOINT,
    METRICS_FILE,
    SPLIT_FILE,
    check_run_folder,
    config_as_resumed,
    is_inside,
    keep_epochs_up_to,
    record_resume,
    write_bad_images,
    write_resolved_config,
    write_run_info,
    write_split,
)
from brain_mri.scoring import test_and_save
from brain_mri.settings import (
    check_epochs_left,
    check_patience_left,
    check_schedule_length,
    check_train_settings,
)

log = logging.getLogger(__name__)

# What a resumed run may change: how long it goes on, and settings that do not change its numbers.
RESUME_MAY_CHANGE = (
    "trainer.max_epochs",
    "trainer.max_time",
    "callbacks.early_stopping.patience",
    "data.num_workers",
    "data.cache_dir",
)


def log_hyperparameters(
    loggers: list, model: L.LightningModule, datamodule, seed: int, results: dict
) -> None:
    """One hyperparameter record per run; TensorBoard's HPARAMS tab also gets the run's results."""
    params = {**{f"model/{k}": v for k, v in model.hparams.items()}, "seed": seed}
    params |= {f"data/{k}": v for k, v in datamodule.hparams.items() if v is not None}
    scores = {k: float(v) for k, v in results.items() if isinstance(v, float)}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics=scores)
        else:
            logger.log_hyperparams(params)
        logger.save()


def command_line_overrides() -> list[str]:
    """The task's overrides from the command line (none when the task is called outside Hydra's main)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def relocated(node: Any, old: str, new: str) -> Any:
    """``node`` (dicts, lists, strings, other values) with every path inside the ``old`` run folder,
    dictionary keys included, moved into ``new``."""
    if isinstance(node, dict):
        return {relocated(key, old, new): relocated(value, old, new) for key, value in node.items()}
    if isinstance(node, list):
        return [relocated(value, old, new) for value in node]
    return new + node[len(old) :] if is_inside(node, old) else node


def folder_trained_in(checkpoint: dict) -> str | None:
    """The run folder a checkpoint's checkpoint callbacks saved into when it was written."""
    for state in checkpoint.get("callbacks", {}).values():
        if isinstance(state, dict) and state.get("dirpath"):
            return str(Path(state["dirpath"]).parent)
    return None


def move_run(cfg: DictConfig, run_dir: Path, last: dict) -> DictConfig:
    """A copied or moved run, made to continue where it is now. Its checkpoints name the folder they were
    saved in (their checkpoint callbacks' state, which Lightning drops, with the best score so far, for
    another folder): they are rewritten in place, atomically, as they belong to this folder. Once ``last``
    (its ``last.ckpt``) names this folder, all of them do. Its resolved config spells out the folder the
    run started in, in each callback and logger."""
    new = str(run_dir.resolve())
    if Path(folder_trained_in(last) or new).resolve() != Path(new):
        for path in sorted((run_dir / CHECKPOINT_DIR).glob("*.ckpt")):
            checkpoint = load_checkpoint(path)
            old = folder_trained_in(checkpoint)
            if old is not None and Path(old).resolve() != Path(new):
                log.info("%s was saved in %s; the run continues in %s.", path.name, old, new)
                checkpoint["callbacks"] = relocated(checkpoint["callbacks"], old, new)
                AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    moved = OmegaConf.create(relocated(OmegaConf.to_container(cfg), str(cfg.paths.output_dir), new))
    assert isinstance(moved, DictConfig)
    return moved


def config_for_resume(run_dir: Path, composed: DictConfig) -> tuple[DictConfig, dict]:
    """The interrupted run's own config, set to continue from its ``last.ckpt`` on its own split, with the
    command line's changes that a resume may make (``RESUME_MAY_CHANGE``); any other change is refused.
    Returns the config and the record of this resume for ``run_info.json``."""
    last = check_run_folder(run_dir)
    overrides = command_line_overrides()
    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)]
    refused = sorted({key for key in keys if key not in (*RESUME_MAY_CHANGE, "resume")})
    if refused:
        raise BrainMRIError(
            f"resume= continues {run_dir} with its own settings, so these cannot change: "
            f"{', '.join(refused)}. A resume may change {', '.join(RESUME_MAY_CHANGE)}. To train on with "
            f"other settings (not the optimizer's), start a new run with ckpt_path={last}; to fine-tune "
            f"its weights with any other settings (learning rate, optimizer, recipe, data): init_from={last}."
        )
    cfg = config_as_resumed(run_dir)  # with what earlier resumes changed (a longer run, say)
    assert isinstance(cfg, DictConfig)
    checkpoint = load_checkpoint(last)
    cfg = move_run(cfg, run_dir, checkpoint)  # a copied or moved run continues where it is now

    for key in keys:
        if key != "resume":
            OmegaConf.update(cfg, key, OmegaConf.select(composed, key), merge=False)
    cfg.ckpt_path, cfg.data.split_file = str(last), str(run_dir / SPLIT_FILE)
    check_schedule_length(checkpoint, str(last), cfg.trainer.max_epochs)
    record = {
        "command": " ".join(sys.argv),
        "overrides": overrides,
        "checkpoint": str(last),
        "first_epoch": checkpoint["epoch"] + 1,  # 0-based, as in metrics.csv
        "first_step": checkpoint["global_step"],
        "checkpoints_removed": checkpoints_to_redo(run_dir, checkpoint),
    }
    check_epochs_left(record["first_epoch"], cfg.trainer.max_epochs)
    check_patience_left(checkpoint, str(last), OmegaConf.select(cfg, "callbacks.early_stopping.patience"))
    return cfg, record


def checkpoints_to_redo(run_dir: Path, last: dict) -> list[str]:
    """Checkpoints of the epochs a resume trains again: a best one that the interrupted process saved
    after its last ``last.ckpt`` would stay beside the real best. Only files that ``last`` (its
    ``last.ckpt``) does not know are read, to see their epoch."""
    known = {Path(LAST_CHECKPOINT).name}
    for state in last.get("callbacks", {}).values():
        known |= {Path(p).name for p in [*state.get("best_k_models", {}), state.get("best_model_path") or ""]}
    unknown = [p for p in sorted((run_dir / CHECKPOINT_DIR).glob("*.ckpt")) if p.name not in known]
    return [p.name for p in unknown if load_checkpoint(p)["epoch"] > last["epoch"]]


def write_run_folder(
    output_dir: Path, cfg: DictConfig, datamodule, resume: dict | None, start: dict | None = None
) -> None:
    """A new run's config, run_info.json (with ``start``, the checkpoint whose weights it started from),
    split.csv and bad_images.csv; a resumed run only records the resume (its config files stay as written
    when it started) and drops log rows it will redo."""
    if resume:
        record_resume(output_dir, resume)
        keep_epochs_up_to(output_dir / EPOCH_LOG, resume["first_epoch"] - 1, resume["first_step"])
        # its results are redone: until then the run reads as incomplete, as a new one does
        (output_dir / METRICS_FILE).unlink(missing_ok=True)
        for name in resume["checkpoints_removed"]:
            log.info("Removing %s: saved in an epoch this resume trains again.", name)
            (output_dir / CHECKPOINT_DIR / name).unlink(missing_ok=True)
    else:
        write_resolved_config(output_dir, cfg)
        fingerprint = datamodule.data_fingerprint
        write_run_info(output_dir, str(datamodule.root), fingerprint, len(datamodule.files), start)
        write_split(output_dir / SPLIT_FILE, datamodule.split_table)
    write_bad_images(output_dir, datamodule.bad_files)


# strategies that start their processes inside every Trainer call (Lightning's registered names). Not
# ddp_fork / ddp_notebook: testing here would initialise CUDA, after which a later job could not fork.
SPAWNING_STRATEGIES = ("ddp_spawn",)


def validation_loss(cfg: DictConfig, model: L.LightningModule, datamodule) -> float:
    """The model's validation loss as it is now, on one device at the run's precision, logged nowhere:
    what a run started from another checkpoint's weights begins with."""
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        strategy="auto",
        devices=1,
        num_nodes=1,
        callbacks=[],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,  # the metric states it leaves behind are updated again in training
    )
    (results,) = trainer.validate(model, datamodule=datamodule, verbose=False)
    return float(results["val/loss"])


def train(cfg: DictConfig) -> float:
    """Train one model; returns the value the sweepers minimise (``optimized_metric``, val/loss_best)."""
    check_train_settings(cfg)
    resume = None
    if cfg.get("resume"):
        cfg, resume = config_for_resume(Path(cfg.resume), cfg)
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")  # data problems surface now, before any model is built
    source = load_checkpoint(cfg.init_from) if cfg.get("init_from") else None
    inherited = {}
    if source is not None and cfg.model.get("normalization") is None:  # the input its weights expect
        inherited["normalization"] = source["hyper_parameters"].get("normalization")
    # the model carries its input contract: class names, input size and crop, so a checkpoint alone is enough
    model = hydra.utils.instantiate(
        cfg.model,
        class_names=datamodule.class_names,
        image_size=datamodule.hparams.image_size,
        crop=datamodule.hparams.crop,
        **inherited,
    )
    start = None
    if source is not None:
        start = {"checkpoint": str(cfg.init_from), "head_replaced": model.start_from(source, cfg.init_from)}
        start["val/loss_before_training"] = validation_loss(cfg, model, datamodule)
        log.info("val/loss before training: %.4f", start["val/loss_before_training"])
    pretrained = model.hparams.weights or model.hparams.weights_path or source is not None
    if model.hparams.freeze_backbone_epochs and not pretrained:
        log.warning("model.freeze_backbone_epochs without pretrained weights freezes a random backbone.")
    model.provenance |= {
        "train_sha256": datamodule.partition_hashes("train"),
        "val_sha256": datamodule.partition_hashes("val"),
    }

    loggers = instantiate_group(cfg.get("logger"))
    # resolved now: under ddp_spawn the writer runs in a process where Hydra's resolvers are not set up
    resolved = DictConfig(OmegaConf.to_container(cfg, resolve=True))
    write = partial(
        write_run_folder, output_dir, resolved, datamodule, resume, start
    )  # pickles, unlike a closure
    callbacks = task_callbacks(instantiate_group(cfg.get("callbacks")), output_dir, write, first_stage="fit")
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log.info(
        "Precision %s, channels_last %s, accelerator %s",
        trainer.precision,
        model.hparams.channels_last,
        type(trainer.accelerator).__name__,
    )
    ckpt_path = cfg.get("ckpt_path") or None  # ckpt_path='' is none, as resume='' is
    with warnings.catch_warnings():
        if resume:
            log.info("Resuming %s at epoch %d.", output_dir, resume["first_epoch"])
            # Lightning's warning about a checkpoint folder that is not empty: it is this run's
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        elif ckpt_path:
            log.info(
                "Training on from %s in a new run folder: its best checkpoint, val/loss_best and early "
                "stopping count from this run's epochs.",
                ckpt_path,
            )
            # Lightning's warning that the old folder's best is not carried over: said plainly above
            warnings.filterwarnings("ignore", message="The dirpath has changed")
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)

    best = trainer.checkpoint_callback  # the first ModelCheckpoint of the config: best by val/loss
    if not isinstance(best, ModelCheckpoint) or not best.best_model_path:
        raise BrainMRIError("Training ended without a best checkpoint: did validation run at least once?")
    # the best checkpoint's score; under ddp_spawn it stays in the workers, so the logged minimum instead
    score = best.best_model_score
    summary = {
        "val/loss_best": float(score if score is not None else trainer.callback_metrics["val/loss_best"]),
        "best_checkpoint": best.best_model_path,
        "best_epoch": load_checkpoint(best.best_model_path)["epoch"],
        "epochs_trained": int(trainer.callback_metrics[EPOCHS_TRAINED]),  # counted where the fit ran
    }
    evaluator = trainer
    if str(cfg.trainer.get("strategy")).startswith(SPAWNING_STRATEGIES):
        # each Trainer call would start its processes anew (about 11 s on a CPU): test and predict the few
        # held-out images on one device in this process, with the same callbacks and loggers
        log.info("Testing in this process on one device (trainer.strategy=%s trained).", cfg.trainer.strategy)
        evaluator = hydra.utils.instantiate(
            cfg.trainer, strategy="auto", devices=1, callbacks=callbacks, logger=loggers or False
        )
    results = test_and_save(
        evaluator, model, datamodule, output_dir, best.best_model_path, summary, predict_validation=True
    )
    log_hyperparameters(loggers, model, datamodule, cfg.seed, results)
    log.info(
        "Run folder %s; best checkpoint %s (val/loss %.4f)",
        output_dir,
        best.best_model_path,
        summary["val/loss_best"],
    )
    return optimized_value(cfg, results, default="val/loss_best")
