"""Testing a model and writing what it scored: ``metrics.json`` and ``predictions.csv``, the same way for
training (its best checkpoint) and for ``eval.py``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging

from brain_mri.data import BrainMRIDataModule
from brain_mri.models import BrainMRIClassifier
from brain_mri.report.statistics import metrics_by_source, positive_label
from brain_mri.runs.files import METRICS_FILE, PREDICTIONS_FILE, read_predictions, write_json

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


def per_source(predictions: Path, datamodule: BrainMRIDataModule, model: BrainMRIClassifier) -> dict:
    """The test metrics of each source (hospital, scanner) the test partition holds."""
    found = read_predictions(predictions)
    source_of = {row["path"]: row.get("source", "") for row in datamodule.split_table}
    positive = positive_label(found.class_names, model.hparams.get("positive_class"))
    sources = [source_of[path] for path in found.paths]
    return metrics_by_source(found.labels, found.probabilities, sources, positive)


def test_and_save(
    trainer: L.Trainer,
    model: BrainMRIClassifier,
    datamodule: BrainMRIDataModule,
    output_dir: Path,
    ckpt_path: str | None = None,
    extra: dict | None = None,
    predict_validation: bool = False,
) -> dict:
    """Test on the test partition (across all processes under DDP), then predict every test image with
    the Trainer, whose :class:`PredictionsWriter` writes ``predictions.csv`` (and, ``predict_validation``,
    ``val_predictions.csv``); the rank-zero process writes ``metrics.json``. Returns what it holds.

    Used by training (on the best checkpoint) and by ``eval.py``, so both write the same files the same way.
    """
    # A weight-averaging callback would load the checkpoint's raw weights over the averaged ones it saved
    # as the state dict (Lightning's WeightAveraging.on_load_checkpoint): test what was checkpointed.
    kept = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]  # type: ignore[attr-defined]
    trainer.callbacks = kept  # type: ignore[attr-defined]
    metrics: dict[str, Any] = dict(trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path)[0])
    if predict_validation and len(datamodule.partition_indices("val")):  # val_predictions.csv too
        datamodule.predict_partitions = ("test", "val")
    trainer.predict(model, datamodule=datamodule, ckpt_path=ckpt_path, return_predictions=False)
    datamodule.predict_partitions = ("test",)
    metrics |= seen_in_training(model, datamodule.partition_hashes("test"))
    if datamodule.sources and trainer.is_global_zero:
        metrics["per_source"] = per_source(output_dir / PREDICTIONS_FILE, datamodule, model)
    metrics |= {**(extra or {}), "positive_class": model.hparams.get("positive_class"), "status": "completed"}
    if trainer.is_global_zero:
        write_json(output_dir / METRICS_FILE, metrics)
    return metrics
