"""The evaluation task: test a checkpoint and write ``metrics.json`` and ``predictions.csv``."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from brain_mri.callbacks import task_callbacks
from brain_mri.checkpoints import load_checkpoint, restore_classifier
from brain_mri.data import BrainMRIDataModule
from brain_mri.hardware import precision_for_checkpoint
from brain_mri.launch import instantiate_group, optimized_value
from brain_mri.models import BrainMRIClassifier
from brain_mri.run_outputs import METRICS_FILE, PREDICTIONS_FILE, write_bad_images, write_json

log = logging.getLogger(__name__)


def seen_in_training(model: BrainMRIClassifier, hashes: list[str]) -> dict[str, int]:
    """How many of the evaluated images (by content hash) the model was trained or validated on."""
    trained, validated = set(model.provenance["train_sha256"]), set(model.provenance["val_sha256"])
    seen = {
        "images_evaluated": len(hashes),
        "images_seen_in_training": sum(h in trained for h in hashes),
        "images_seen_in_validation": sum(h in validated for h in hashes),
    }
    if seen["images_seen_in_training"] or seen["images_seen_in_validation"]:
        log.warning(
            "%d of the %d evaluated images were in this model's training partition and %d in its "
            "validation partition: these metrics overstate how well it does on new images.",
            seen["images_seen_in_training"],
            len(hashes),
            seen["images_seen_in_validation"],
        )
    elif not model.provenance["train_sha256"]:
        log.warning("The checkpoint does not record which images it was trained on; cannot check.")
    return seen


def test_and_save(
    trainer: L.Trainer,
    model: BrainMRIClassifier,
    datamodule: BrainMRIDataModule,
    output_dir: Path,
    ckpt_path: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Test on the test partition (across all processes under DDP), then predict every test image with
    the Trainer, whose :class:`PredictionsWriter` writes ``predictions.csv``; the rank-zero process writes
    ``metrics.json``. Returns what ``metrics.json`` holds.

    Used by training (on the best checkpoint) and by ``eval.py``, so both write the same files the same way.
    """
    metrics = dict(trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path)[0])
    trainer.predict(model, datamodule=datamodule, ckpt_path=ckpt_path, return_predictions=False)
    metrics |= seen_in_training(model, datamodule.partition_hashes("test"))
    metrics.update(extra or {}, positive_class=model.hparams.get("positive_class"), status="completed")
    if trainer.is_global_zero:
        write_json(output_dir / METRICS_FILE, metrics)
    return metrics


def evaluate(cfg: DictConfig) -> float:
    """Test ``cfg.ckpt_path`` on the test partition of its run's split, or on every image of a folder."""
    checkpoint = load_checkpoint(cfg.ckpt_path)
    model = restore_classifier(checkpoint)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)  # resolved here: instantiate sees no parent
    datamodule = hydra.utils.instantiate(
        data_cfg,
        trained=checkpoint.get("datamodule_hyper_parameters"),
        class_names=model.hparams.class_names,
        _convert_="all",
    )
    datamodule.setup("test")
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if trainer_cfg["precision"] is None:
        trainer_cfg["precision"], note = precision_for_checkpoint(
            model.provenance["precision"], trainer_cfg["accelerator"]
        )
        if note:
            log.warning("Evaluating in %s: %s.", trainer_cfg["precision"], note)
    output_dir = Path(cfg.paths.output_dir)
    write = partial(write_bad_images, output_dir, datamodule.bad_files)
    callbacks = task_callbacks(instantiate_group(cfg.get("callbacks")), output_dir, write)
    trainer = hydra.utils.instantiate(trainer_cfg, callbacks=callbacks, logger=False)
    log.info("Evaluating in %s on %s", trainer.precision, type(trainer.accelerator).__name__)
    metrics = test_and_save(trainer, model, datamodule, output_dir, extra={"checkpoint": str(cfg.ckpt_path)})
    log.info("Wrote %s and %s to %s", METRICS_FILE, PREDICTIONS_FILE, output_dir)
    return optimized_value(cfg, metrics, default="test/loss")
