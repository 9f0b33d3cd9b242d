"""The training task: fit, test the best checkpoint, and leave a self-describing run folder."""

from __future__ import annotations

import logging
import warnings
from functools import partial
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from brain_mri.config.launch import instantiate_group, optimized_value
from brain_mri.config.settings import check_train_settings
from brain_mri.config.slurm import is_requeued_run
from brain_mri.data.split import write_split
from brain_mri.errors import BrainMRIError
from brain_mri.models import BrainMRIClassifier
from brain_mri.runs.checkpoints import load_checkpoint
from brain_mri.runs.files import (
    GALLERY_DIR,
    SPLIT_FILE,
    one_checkpoint,
    write_bad_images,
    write_near_duplicates,
    write_resolved_config,
    write_run_info,
)
from brain_mri.runs.resume import config_for_resume, prepare_resumed_folder
from brain_mri.training.callbacks import EPOCHS_TRAINED, task_callbacks
from brain_mri.training.gallery import write_gallery
from brain_mri.training.loggers import TensorBoardLogger
from brain_mri.training.scoring import test_and_save

log = logging.getLogger(__name__)


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


def write_run_folder(
    output_dir: Path, cfg: DictConfig, datamodule, resume: dict | None, start: dict | None = None
) -> None:
    """A new run's config, run_info.json (with ``start``, the checkpoint whose weights it started from),
    split.csv, bad_images.csv and near_duplicates.csv; a resumed run only records the resume (its config
    files stay as written when it started) and drops log rows it will redo."""
    if resume:
        prepare_resumed_folder(output_dir, resume)
    else:
        write_resolved_config(output_dir, cfg)
        fingerprint = datamodule.data_fingerprint
        write_run_info(output_dir, str(datamodule.root), fingerprint, len(datamodule.files), start)
        write_split(output_dir / SPLIT_FILE, datamodule.split_table)
    write_bad_images(output_dir, datamodule.bad_files)
    write_near_duplicates(output_dir, datamodule.near_duplicates)


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
    elif is_requeued_run(Path(cfg.paths.output_dir)):  # Slurm stopped it and started it again
        cfg, resume = config_for_resume(Path(cfg.paths.output_dir), cfg, requeued=True)
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    # data problems surface now, before any model is built; the decoded set is written before Lightning
    # starts other processes (DDP ranks), which then map it instead of decoding a copy each
    datamodule.prepare_data()
    datamodule.setup("fit")
    initial = one_checkpoint(cfg.init_from) if cfg.get("init_from") else None  # a run folder: its best
    source = load_checkpoint(initial) if initial else None
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
        start = {"checkpoint": str(initial), "head_replaced": model.start_from(source, str(initial))}
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
            again = ""
            if requeue := resume.get("slurm_requeue"):
                again = f"Slurm started job {requeue['job']} again (restart {requeue['restart']}). "
            log.info("%sResuming %s at epoch %d.", again, output_dir, resume["first_epoch"])
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
    if cfg.get("gallery_images") and evaluator.is_global_zero:
        tested = BrainMRIClassifier.load_from_checkpoint(best.best_model_path, map_location="cpu")
        shown = write_gallery(output_dir, tested, datamodule.root, cfg.gallery_images)
        log.info("Grad-CAM maps of %d test images: %s", shown, output_dir / GALLERY_DIR)
    log_hyperparameters(loggers, model, datamodule, cfg.seed, results)
    if evaluator.is_global_zero:  # once, not by every process of a DDP run
        log.info(
            "Run folder %s; best checkpoint %s (val/loss %.4f)",
            output_dir,
            best.best_model_path,
            summary["val/loss_best"],
        )
    return optimized_value(cfg, results, default="val/loss_best")
