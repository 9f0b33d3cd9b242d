"""The evaluation task: test a checkpoint and write ``metrics.json`` and ``predictions.csv``."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from brain_mri.config.launch import instantiate_group, optimized_value
from brain_mri.config.settings import check_eval_settings
from brain_mri.data.split import read_split
from brain_mri.errors import BrainMRIError
from brain_mri.hardware import precision_for_checkpoint
from brain_mri.models.loading import load_model
from brain_mri.runs.checkpoints import load_checkpoint
from brain_mri.runs.files import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    SPLIT_FILE,
    run_folder_of,
    write_bad_images,
)
from brain_mri.training.callbacks import task_callbacks
from brain_mri.training.scoring import test_and_save

log = logging.getLogger(__name__)


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
    check_eval_settings(cfg)
    model, checkpoints = load_model(str(cfg.ckpt_path), cfg.eval.tta)
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
