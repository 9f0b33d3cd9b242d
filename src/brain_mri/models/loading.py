"""The model a checkpoint path names: one checkpoint's classifier, or the ensemble of a run or sweep
folder's best checkpoints."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from omegaconf import ListConfig

from brain_mri.errors import BrainMRIError
from brain_mri.models.classifier import BrainMRIClassifier
from brain_mri.models.ensemble import EnsembleClassifier
from brain_mri.runs.checkpoints import load_checkpoint
from brain_mri.runs.files import (
    CONFIG_FILE,
    PREDICTIONS_FILE,
    PROBABILITY_PREFIX,
    best_checkpoints,
    read_config,
    run_folder_of,
)

log = logging.getLogger(__name__)


def load_model(ckpt_path: str, tta: str) -> tuple[BrainMRIClassifier, list[Path]]:
    """The model ``ckpt_path`` names (a checkpoint; a run or sweep folder: the ensemble of the best
    checkpoint of every completed run under it), averaged over views with ``tta=flip``."""
    checkpoints = best_checkpoints(ckpt_path)
    members = [BrainMRIClassifier.restored(load_checkpoint(path), path) for path in checkpoints]
    for path, member in zip(checkpoints, members, strict=True):
        check_against_its_run(path, member)
    if len(members) == 1 and tta == "none":
        log.info("Model: %s", checkpoints[0])
        return members[0], checkpoints
    names = [str(path) for path in checkpoints]
    views = "" if tta == "none" else f" over the views of tta={tta}"
    log.info("Averaging %d model(s)%s: %s", len(members), views, ", ".join(names))
    return EnsembleClassifier(members, tta, names), checkpoints


def check_against_its_run(path: Path, model: BrainMRIClassifier) -> None:
    """A checkpoint in a run folder says what its run recorded: the order of its classes (the columns of
    the run's ``predictions.csv``), its architecture and input normalisation (``config.yaml``). A value
    that differs means the checkpoint was edited or moved into another run's folder: refused, since
    every prediction would be silently wrong. (A checkpoint alone has nothing to be checked against.)"""
    run = run_folder_of(path)
    recorded: dict[str, object] = {}
    if (run / PREDICTIONS_FILE).is_file():
        with open(run / PREDICTIONS_FILE, newline="", encoding="utf-8", errors="surrogateescape") as file:
            header = next(csv.reader(file), [])
        classes = [c.removeprefix(PROBABILITY_PREFIX) for c in header if c.startswith(PROBABILITY_PREFIX)]
        recorded["class_names"] = classes or None
    if (run / CONFIG_FILE).is_file():
        config = read_config(run / CONFIG_FILE)
        settings = config.get("model") or {}
        recorded["arch"] = settings.get("arch")
        if not config.get("init_from"):  # else unset means the weights' own, from that checkpoint
            pretrained = settings.get("weights") or settings.get("weights_path")
            recorded["normalization"] = settings.get("normalization") or (
                "imagenet" if pretrained else "none"
            )
    differ = [
        f"{name} {getattr(model.hparams, name, None)!r} (its run: {value!r})"
        for name, value in recorded.items()
        if value is not None and _plain(getattr(model.hparams, name, None)) != _plain(value)
    ]
    if differ:
        raise BrainMRIError(
            f"{path} does not match the run it is in ({run}): {'; '.join(differ)}. The checkpoint was "
            "edited or moved into another run's folder; its predictions cannot be trusted."
        )


def _plain(value: Any) -> Any:
    """Lists, tuples and OmegaConf lists compare as lists."""
    return list(value) if isinstance(value, (list, tuple, ListConfig)) else value
