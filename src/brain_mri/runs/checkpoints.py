"""Load and write checkpoints safely (``weights_only=True``, checksums, atomic saves), with clear errors.
Turning one into a classifier is the model's own job (``BrainMRIClassifier.restored``)."""

from __future__ import annotations

import functools
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from brain_mri.atomic import atomic_path, written_whole
from brain_mri.errors import BrainMRIError


def require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise BrainMRIError(f"No checkpoint file at {path}.")
    return path


def verify_checksums(path: Path) -> None:
    """Refuse a damaged checkpoint: every part of the zip container carries a CRC-32 (written by
    ``torch.save``), which is checked here, so a file damaged on disk or in a copy never loads as
    silently wrong weights, even when it was copied alone, away from its run folder. Each version of a
    file is read once per process (a ``ckpt_path=`` start is checked, then loaded by Lightning)."""
    stat = path.stat()
    verified_once(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.cache
def verified_once(path: Path, modified_ns: int, size: int) -> None:
    """:func:`verify_checksums` of one version of a file (its time and size name the version); a
    damaged file raises, and is read again on the next call."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise BrainMRIError(f"{path} is damaged and cannot be read ({err}).") from None
    if damaged is not None:
        raise BrainMRIError(
            f"{path} is damaged: its part {damaged} fails its checksum (CRC-32). "
            "Copy the file again, or use another checkpoint."
        )


def keeps_best_checkpoints(trainer) -> bool:
    """Whether this fit goes on with its folder's best checkpoints: a resume in the folder its checkpoint
    was saved in. A fresh run has none, and from a checkpoint of another folder (``ckpt_path=``)
    Lightning keeps none, so what measures against the best so far (``val/loss_best``, early stopping's
    patience) starts anew there too."""
    checkpoints = trainer.checkpoint_callback
    return isinstance(checkpoints, ModelCheckpoint) and checkpoints.best_model_score is not None


def safe_load(path: str | Path, map_location="cpu") -> dict:
    """``torch.load`` with ``weights_only=True``, and one clear message for anything else."""
    path = require_file(path)
    if not zipfile.is_zipfile(path):  # every checkpoint torch.save has written since PyTorch 1.6 is a zip
        with path.open("rb") as file:
            begins_as_zip = file.read(4) == b"PK\x03\x04"
        if begins_as_zip:  # its table of contents, at the end, is missing
            raise BrainMRIError(f"{path} is damaged or incomplete (cut off in a copy or a download?).")
        raise BrainMRIError(f"{path} is not a PyTorch checkpoint.")
    verify_checksums(path)
    try:
        # mmap: reading one field (the epoch) of a large checkpoint does not read all of its weights
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise BrainMRIError(
            f"{path} was refused: it holds objects other than tensors and plain values, which could run "
            f"code when loaded. Only load checkpoints you trust. ({str(err).splitlines()[0]})"
        ) from None
    except Exception as err:  # torch raises RuntimeError, EOFError, ... for damaged files
        raise BrainMRIError(
            f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})."
        ) from None


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint dictionary, refusing anything that is not a BrainMRIClassifier checkpoint."""
    checkpoint = safe_load(path)
    hyperparameters = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if "state_dict" not in checkpoint or "arch" not in hyperparameters:
        raise BrainMRIError(f"{path} is not a BrainMRIClassifier checkpoint (no model hyperparameters).")
    return checkpoint


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a checkpoint (its weights and optimizer state): about its size on disk."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(item) for item in value)
    return 0


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that never leaves a torn file and only loads what is safe.

    A checkpoint is written to a temporary file beside its target and renamed into place (an atomic
    step), so a run killed during a save keeps its previous ``last.ckpt``. Loading goes through
    :func:`safe_load` (``weights_only=True`` and a clear message for unsafe or damaged files).
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with written_whole(), atomic_path(path, needed=tensor_bytes(checkpoint)) as temporary:
            super().save_checkpoint(checkpoint, temporary, storage_options)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        """Always ``weights_only=True``, whatever the caller asks."""
        return safe_load(path, map_location=map_location)
