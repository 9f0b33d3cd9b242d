"""The evaluation task: test a checkpoint and write ``metrics.json`` and ``predictions.csv``."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from brain_mri.checkpoints import load_checkpoint, restore_classifier
from brain_mri.cli import instantiate_group
from brain_mri.data import BrainMRIDataModule
from brain_mri.models import BrainMRIClassifier
from brain_mri.run_outputs import METRICS_FILE, PREDICTION_FIELDS, PREDICTIONS_FILE, write_csv, write_json

log = logging.getLogger(__name__)


def test_and_save(
    trainer: L.Trainer,
    model: BrainMRIClassifier,
    datamodule: BrainMRIDataModule,
    output_dir: Path,
    ckpt_path: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Test on the test partition, predict it, and write both files; returns what ``metrics.json`` holds.

    Used by training (on the best checkpoint) and by ``eval.py``, so both write the same files the same way.
    """
    metrics = dict(trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path)[0])
    probabilities = torch.cat(trainer.predict(model, datamodule=datamodule)).float()
    positive = probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities.max(dim=1).values
    rows = [
        {"path": f.path, "label": f.label, "probability": float(p), "predicted": int(c)}
        for f, p, c in zip(
            datamodule.partition_files("test"), positive, probabilities.argmax(dim=1), strict=True
        )
    ]
    metrics.update(extra or {}, status="completed")
    if trainer.is_global_zero:
        write_csv(output_dir / PREDICTIONS_FILE, rows, PREDICTION_FIELDS)
        write_json(output_dir / METRICS_FILE, metrics)
    return metrics


def evaluate(cfg: DictConfig) -> float:
    """Test ``cfg.ckpt_path`` on the test partition of its run's split, or on every image of a folder."""
    checkpoint = load_checkpoint(cfg.ckpt_path)
    model = restore_classifier(checkpoint)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)  # resolved here: instantiate sees no parent
    datamodule = hydra.utils.instantiate(data_cfg, trained=checkpoint.get("datamodule_hyper_parameters"))
    datamodule.setup("test")
    trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")), logger=False
    )
    output_dir = Path(cfg.paths.output_dir)
    metrics = test_and_save(trainer, model, datamodule, output_dir, extra={"checkpoint": str(cfg.ckpt_path)})
    log.info("Wrote %s and %s to %s", METRICS_FILE, PREDICTIONS_FILE, output_dir)
    return metrics["test/loss"]
