"""The evaluation task: test a checkpoint and write ``metrics.json`` and ``predictions.csv``."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import WeightAveraging
from omegaconf import DictConfig, OmegaConf

from brain_mri.callbacks import task_callbacks
from brain_mri.checkpoints import load_checkpoint
from brain_mri.data import BrainMRIDataModule
from brain_mri.errors import BrainMRIError
from brain_mri.hardware import precision_for_checkpoint
from brain_mri.launch import instantiate_group, optimized_value
from brain_mri.models import BrainMRIClassifier, EnsembleClassifier
from brain_mri.run_outputs import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    SPLIT_FILE,
    best_checkpoints,
    read_split,
    run_folder_of,
    write_bad_images,
    write_json,
)
from brain_mri.settings import check_eval_settings

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


def evaluation_data(
    ckpt_path: str,
    trained: dict | None,
    class_names: list[str],
    image_size: int | None,
    crop: str = "none",
    on: str = "test",
    root: str | None = None,
    split_file: str | None = None,
    class_map: dict[str, str] | None = None,
    on_bad_image: str | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
) -> BrainMRIDataModule:
    """The data a checkpoint is tested on, prepared as in training: at the model's input size, labelled by
    its ``class_names``, with the training run's data root and handling of unreadable files by default.

    ``on="test"``: the test partition of the run's ``split.csv`` (or of ``split_file``);
    ``on="all"``: every image under ``root`` (default: the training data root).
    """
    if not trained:
        raise BrainMRIError(f"{ckpt_path} holds no data settings: was it written by train.py?")
    settings = {
        "root": root or trained["root"],
        "image_size": image_size or trained["image_size"],
        "crop": crop,
        "duplicate_threshold": trained["duplicate_threshold"],
        "on_bad_image": on_bad_image or trained.get("on_bad_image", "error"),
        "min_image_size": trained.get("min_image_size", 1),
        "class_names": class_names,
        "class_map": class_map,
        "batch_size": batch_size or trained["batch_size"],
        "cache_dir": trained.get("cache_dir"),
        "num_workers": num_workers,
    }
    if on == "all":
        return BrainMRIDataModule(**settings, val_fraction=0.0, test_fraction=1.0)
    saved_split = Path(split_file) if split_file else run_folder_of(ckpt_path) / SPLIT_FILE
    if not saved_split.is_file():
        raise BrainMRIError(
            f"No split file at {saved_split}: pass data.split_file=<run>/split.csv, or evaluate every "
            "image of a folder the model was not trained on with eval.on=all data.root=<folder>."
        )
    return BrainMRIDataModule(**settings, split_file=str(saved_split))


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
    metrics |= {**(extra or {}), "positive_class": model.hparams.get("positive_class"), "status": "completed"}
    if trainer.is_global_zero:
        write_json(output_dir / METRICS_FILE, metrics)
    return metrics


def models_to_evaluate(ckpt_path: str, tta: str) -> tuple[BrainMRIClassifier, list[Path]]:
    """The model ``ckpt_path`` names (a checkpoint; a run or sweep folder: the ensemble of the best
    checkpoint of every completed run under it), averaged over views with ``tta=flip``."""
    checkpoints = best_checkpoints(ckpt_path)
    members = [BrainMRIClassifier.restored(load_checkpoint(path)) for path in checkpoints]
    if len(members) == 1 and tta == "none":
        log.info("Model: %s", checkpoints[0])
        return members[0], checkpoints
    names = [str(path) for path in checkpoints]
    views = "" if tta == "none" else f" over the views of tta={tta}"
    log.info("Averaging %d model(s)%s: %s", len(members), views, ", ".join(names))
    return EnsembleClassifier(members, tta, names), checkpoints


def same_test_partition(checkpoints: list[Path]) -> None:
    """Ensemble members tested on their runs' test partition must share it (folds of one split do)."""
    tests = {
        path: {
            row["sha256"]
            for row in read_split(run_folder_of(path) / SPLIT_FILE)
            if row["partition"] == "test"
        }
        for path in checkpoints
        if (run_folder_of(path) / SPLIT_FILE).is_file()
    }
    differing = [str(path) for path, test in tests.items() if test != next(iter(tests.values()))]
    if differing:
        raise BrainMRIError(
            f"These runs have another test partition than {checkpoints[0]}: {', '.join(differing)}. Average "
            "runs of one split (e.g. the folds of a cross-validation), or evaluate on a folder none of them "
            "was trained on: eval.on=all data.root=<folder>."
        )


def evaluate(cfg: DictConfig) -> float:
    """Test ``cfg.ckpt_path`` (a checkpoint, or the ensemble of a run or sweep folder) on the test partition
    of its run's split, or on every image of a folder."""
    check_eval_settings(cfg)  # also checked before Hydra makes the folder, in a single run
    model, checkpoints = models_to_evaluate(str(cfg.ckpt_path), cfg.eval.tta)
    if cfg.eval.on == "test" and not cfg.data.split_file:
        same_test_partition(checkpoints)
    trained = load_checkpoint(checkpoints[0]).get("datamodule_hyper_parameters")
    data_cfg: Any = OmegaConf.to_container(cfg.data, resolve=True)  # resolved: instantiate sees no parent
    datamodule = hydra.utils.instantiate(
        data_cfg,
        ckpt_path=str(checkpoints[0]),
        trained=trained,
        class_names=model.hparams.class_names,
        image_size=model.hparams.get("image_size"),
        crop=model.hparams.get("crop", "none"),
        _convert_="all",
    )
    datamodule.setup("test")
    present = {f.label for f in datamodule.partition_files("test")}
    if len(present) < 2:
        log.warning("Every evaluated image is of one class: AUROC, specificity and kappa are not defined.")
    trainer_cfg: Any = OmegaConf.to_container(cfg.trainer, resolve=True)
    if trainer_cfg["precision"] is None:
        trainer_cfg["precision"], note = precision_for_checkpoint(
            model.provenance["precision"], trainer_cfg["accelerator"]
        )
        if note:
            log.warning("Evaluating in %s: %s.", trainer_cfg["precision"], note)
    output_dir = Path(cfg.paths.output_dir)
    write = partial(write_bad_images, output_dir, datamodule.bad_files)
    callbacks = task_callbacks(instantiate_group(cfg.get("callbacks")), output_dir, write, first_stage="test")
    trainer = hydra.utils.instantiate(trainer_cfg, callbacks=callbacks, logger=False)
    log.info("Evaluating in %s on %s", trainer.precision, type(trainer.accelerator).__name__)
    extra = {"checkpoint": str(cfg.ckpt_path), "members": [str(p) for p in checkpoints], "tta": cfg.eval.tta}
    metrics = test_and_save(trainer, model, datamodule, output_dir, extra=extra)
    log.info("Wrote %s and %s to %s", METRICS_FILE, PREDICTIONS_FILE, output_dir)
    return optimized_value(cfg, metrics, default="test/loss")
