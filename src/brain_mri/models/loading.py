"""The model a checkpoint path names: one checkpoint's classifier, or the ensemble of a run or sweep
folder's best checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

from brain_mri.models.classifier import BrainMRIClassifier
from brain_mri.models.ensemble import EnsembleClassifier
from brain_mri.runs.checkpoints import load_checkpoint
from brain_mri.runs.files import best_checkpoints

log = logging.getLogger(__name__)


def load_model(ckpt_path: str, tta: str) -> tuple[BrainMRIClassifier, list[Path]]:
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
