"""The evaluation task: test a checkpoint and write ``metrics.json`` and ``predictions.csv``."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from brain_mri.config.launch import instantiate_group, optimized_value
from brain_mri.config.settings import check_eval_settings
from brain_mri.data.boxes import boxes_on_input, read_boxes
from brain_mri.data.split import read_split
from brain_mri.errors import BrainMRIError
from brain_mri.hardware import precision_for_checkpoint, uses_cuda
from brain_mri.models.loading import load_model
from brain_mri.models.localisation import (
    class_probabilities,
    control_boxes,
    hidden,
    localisation,
    of_true_class,
    true_class_maps,
    with_random_weights,
)
from brain_mri.report.evaluations import box_summary
from brain_mri.report.statistics import mean_intervals
from brain_mri.runs.checkpoints import load_checkpoint
from brain_mri.runs.files import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    SPLIT_FILE,
    run_folder_of,
    write_bad_images,
)
from brain_mri.training.callbacks import task_callbacks
from brain_mri.training.gallery import write_box_gallery
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


def box_figures(model, datamodule, cfg: DictConfig, device: str) -> dict:
    """Against the boxes of ``eval.boxes``: how the maps (``eval.explain``) of the evaluated images' true
    classes point at them, beside those of the network with random weights, and with
    ``eval.occlude=boxes`` how their probabilities fall when the box is hidden against an equal box
    elsewhere on the head; means with intervals by scan (duplicate group).
    Draws ``eval.gallery_images`` of the images under their maps, with box and peak (``gallery/``)."""
    boxes_file = Path(cfg.eval.boxes)
    files = datamodule.partition_files("test")
    size, crop = model.hparams.image_size, model.hparams.get("crop", "none")
    boxes, has = boxes_on_input(read_boxes(boxes_file), files, Path(datamodule.root), size, crop, boxes_file)
    images, labels = (
        torch.cat(part).numpy()
        for part in zip(*datamodule.partition_loader("test", sharded=False), strict=True)
    )
    images, labels, boxes = images[has][:, 0], labels[has], boxes[has]
    groups = np.array([datamodule.split_table[i]["group"] for i in datamodule.partition_indices("test")])[has]
    model.to(device)
    maps = true_class_maps(model, images, labels, cfg.eval.explain, device)
    pointing = localisation(maps, boxes, cfg.eval.box_tolerance)
    untrained = localisation(
        true_class_maps(with_random_weights(model), images, labels, cfg.eval.explain, device),
        boxes,
        cfg.eval.box_tolerance,
    )
    pointing |= {f"random_weights_{name}": untrained[name] for name in ("pointing_game", "mass_in_box")}
    probabilities = class_probabilities(model, images, device)
    if cfg.eval.gallery_images:
        write_box_gallery(
            Path(cfg.paths.output_dir),
            [file for file, boxed in zip(files, has, strict=True) if boxed],
            images,
            maps,
            boxes,
            pointing["pointing_game"],
            probabilities,
            model.hparams.class_names,
            cfg.eval.gallery_images,
        )
    layer = getattr(model, "members", [model])[0].hparams.get("cam_layer")
    found = {
        "localisation": {
            "method": cfg.eval.explain
            if cfg.eval.explain == "integrated_gradients"
            else f"{cfg.eval.explain} on {layer}",
            "target": "true class",
            "images": int(has.sum()),
            "images_without_a_box": int((~has).sum()),
            "tolerance_px": cfg.eval.box_tolerance,
            "map_size_px": list(maps.shape[1:]),
            **mean_intervals(pointing, groups),
        }
    }
    if cfg.eval.occlude == "boxes":
        shown = of_true_class(probabilities, labels)
        controls = control_boxes(images, boxes)
        drops = {
            "drop_when_box_hidden": shown
            - of_true_class(class_probabilities(model, hidden(images, boxes), device), labels),
            "drop_when_control_hidden": shown
            - of_true_class(class_probabilities(model, hidden(images, controls), device), labels),
        }
        drops["box_minus_control"] = drops["drop_when_box_hidden"] - drops["drop_when_control_hidden"]
        found["occlusion"] = {
            "images": len(images),
            "fill": "the slice's background (1st percentile of its pixels)",
            "control": "an equal box mirrored across the slice's midline, on the head, not overlapping",
            "true_class_probability": float(shown.mean()),
            **mean_intervals(drops, groups),
        }
    return found


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
    if cfg.eval.boxes:
        extra |= box_figures(
            model, datamodule, cfg, "cuda" if uses_cuda(str(trainer_cfg["accelerator"])) else "cpu"
        )
        log.info("Against the boxes of %s: %s", cfg.eval.boxes, box_summary(extra))
    metrics = test_and_save(trainer, model, datamodule, output_dir, extra=extra)
    log.info("Wrote %s and %s to %s", METRICS_FILE, PREDICTIONS_FILE, output_dir)
    return optimized_value(cfg, metrics, default="test/loss")
