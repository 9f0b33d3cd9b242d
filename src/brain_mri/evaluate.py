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


@torch.inference_mode()
def predict_test_partition(trainer: L.Trainer, model: BrainMRIClassifier, datamodule: BrainMRIDataModule):
    """Class probabilities of every test image in split order, at the trainer's precision, in this process."""
    model.eval()
    outputs = []
    for index, (images, labels) in enumerate(datamodule.partition_loader("test", sharded=False)):
        batch = datamodule.on_after_batch_transfer((images.to(model.device), labels.to(model.device)), 0)
        with trainer.precision_plugin.forward_context():
            outputs.append(model.predict_step(batch, index).float().cpu())
    return torch.cat(outputs)


def test_and_save(
    trainer: L.Trainer,
    model: BrainMRIClassifier,
    datamodule: BrainMRIDataModule,
    output_dir: Path,
    ckpt_path: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Test on the test partition (across all processes under DDP), then, in the rank-zero process, predict
    every test image and write ``predictions.csv`` and ``metrics.json``; returns what ``metrics.json`` holds.

    Used by training (on the best checkpoint) and by ``eval.py``, so both write the same files the same way.
    """
    metrics = dict(trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path)[0])
    metrics.update(extra or {}, status="completed")
    if not trainer.is_global_zero:
        return metrics
    probabilities = predict_test_partition(trainer, model, datamodule)
    positive = probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities.max(dim=1).values
    files = datamodule.partition_files("test")
    rows = [
        {"path": f.path, "label": f.label, "probability": float(p), "predicted": int(c)}
        for f, p, c in zip(files, positive, probabilities.argmax(dim=1), strict=True)
    ]
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
