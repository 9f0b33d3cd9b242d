"""The training task: fit, test the best checkpoint, and leave a self-describing run folder."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from brain_mri.checkpoints import load_checkpoint
from brain_mri.cli import instantiate_group
from brain_mri.errors import BrainMRIError
from brain_mri.evaluate import test_and_save
from brain_mri.run_outputs import (
    CONFIG_FILE,
    SPLIT_FILE,
    keep_epochs_up_to,
    write_resolved_config,
    write_run_info,
)

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


def config_for_resume(run_dir: Path) -> DictConfig:
    """The interrupted run's own config, set to continue from its ``last.ckpt`` on its own split."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not (run_dir / CONFIG_FILE).is_file():
        raise BrainMRIError(f"{run_dir} is not a run folder of this project (no {CONFIG_FILE}).")
    if not last.is_file():
        raise BrainMRIError(
            f"{run_dir} has no checkpoints/last.ckpt: it stopped before its first epoch ended."
        )
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    cfg.ckpt_path, cfg.data.split_file = str(last), str(run_dir / SPLIT_FILE)
    return cfg


def train(cfg: DictConfig) -> float:
    """Train one model; returns ``val/loss_best``, the value the sweepers minimise."""
    if cfg.get("resume"):
        cfg = config_for_resume(Path(cfg.resume))
    output_dir = Path(cfg.paths.output_dir)
    writes = rank_zero_only.rank == 0  # under DDP every process runs this task; one writes the files
    if cfg.get("ckpt_path"):
        resumed_epoch = load_checkpoint(cfg.ckpt_path)["epoch"]  # a clear error now for a bad file
        if writes:
            keep_epochs_up_to(output_dir / "csv" / "metrics.csv", resumed_epoch)
    if writes:
        write_resolved_config(output_dir, cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")  # data problems surface now, before any model is built
    if writes:
        write_run_info(output_dir, str(datamodule.root), datamodule.data_fingerprint, len(datamodule.files))
    model = hydra.utils.instantiate(cfg.model)
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")), logger=loggers or False
    )
    log.info(
        "Precision %s, channels_last %s, accelerator %s",
        trainer.precision,
        model.hparams.channels_last,
        type(trainer.accelerator).__name__,
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    best = trainer.checkpoint_callback
    if best is None or not best.best_model_path:
        raise BrainMRIError("Training ended without a best checkpoint: did validation run at least once?")
    summary = {
        # the logged minimum, which also reaches the main process under ddp_spawn (best_model_score does not)
        "val/loss_best": float(trainer.callback_metrics["val/loss_best"]),
        "best_checkpoint": best.best_model_path,
        "best_epoch": load_checkpoint(best.best_model_path)["epoch"],
        "epochs_trained": trainer.current_epoch,
    }
    results = test_and_save(trainer, model, datamodule, output_dir, best.best_model_path, summary)
    log_hyperparameters(loggers, model, datamodule, cfg.seed, results)
    log.info(
        "Run folder %s; best checkpoint %s (val/loss %.4f)",
        output_dir,
        best.best_model_path,
        summary["val/loss_best"],
    )
    return summary["val/loss_best"]
