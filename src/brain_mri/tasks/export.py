"""The export task: a checkpoint as a file for serving without this package.

``python export.py ckpt_path=<checkpoint | run folder> format=onnx|torchscript [output=<file>]`` writes
``<run>_<checkpoint>.onnx`` (or ``.pt``) into its own output folder, ``outputs/exports/<date>_<time>/``,
or to ``output``. :func:`export_checkpoint` is the same for Python.

The exported network takes what ``BrainMRIClassifier.forward`` takes, a float (N, 3, size, size) batch in
[0, 1] with any N, and returns the same logits (normalisation included). The input contract (class names,
image size, crop) travels with the file: ONNX metadata properties, or ``contract.json`` in TorchScript.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig

from brain_mri.atomic import atomic_path
from brain_mri.config.settings import EXPORT_FORMATS, check_export_settings
from brain_mri.errors import BrainMRIError
from brain_mri.models import BrainMRIClassifier
from brain_mri.runs.checkpoints import load_checkpoint
from brain_mri.runs.files import CHECKPOINT_DIR, one_checkpoint, run_folder_of

log = logging.getLogger(__name__)


def input_contract(model) -> dict:
    hp = model.hparams
    return {
        "class_names": list(hp.class_names),
        "image_size": hp.image_size,
        "crop": hp.get("crop", "none"),
        "input": "float32 (N, 3, image_size, image_size) in [0, 1], the grayscale repeated 3 times",
        "output": "logits (N, classes); softmax gives the class probabilities",
    }


def export(cfg: DictConfig) -> Path:
    """Export ``cfg.ckpt_path`` as ``cfg.format``; returns the file written: ``cfg.output``, or the run's
    name in the task's own output folder (never the folder the command was started from)."""
    check_export_settings(cfg)
    checkpoint = one_checkpoint(cfg.ckpt_path)
    target = (
        Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / export_name(checkpoint, cfg.format)
    )
    written = export_checkpoint(checkpoint, cfg.format, target)
    log.info("Exported %s as %s to %s", checkpoint, cfg.format, written.resolve())
    return written


def export_name(checkpoint: Path, format: str) -> str:
    """``<run>_<checkpoint stem>.<ext>``: the run says which model, the stem which of its checkpoints.
    A sweep's job folder is a number, so the sweep folder's name comes first."""
    if checkpoint.parent.name != CHECKPOINT_DIR:  # a checkpoint outside a run folder: its own name
        return checkpoint.stem + EXPORT_FORMATS[format]
    run = run_folder_of(checkpoint)
    run_name = f"{run.parent.name}_{run.name}" if run.name.isdigit() else run.name
    return f"{run_name}_{checkpoint.stem}{EXPORT_FORMATS[format]}"


def export_checkpoint(ckpt_path: str | Path, format: str, output: str | Path) -> Path:
    """Write the exported model to ``output``; returns its path. ``ckpt_path`` may be a run folder: its
    best checkpoint."""
    if format not in EXPORT_FORMATS:
        raise BrainMRIError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got '{format}'.")
    checkpoint = one_checkpoint(ckpt_path)
    model = BrainMRIClassifier.restored(load_checkpoint(checkpoint)).eval()
    contract = input_contract(model)
    if not contract["image_size"]:
        raise BrainMRIError(f"{checkpoint} does not record its image size: was it written by train.py?")
    target = Path(output)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return write(model, contract, format, target)
    except OSError as err:  # a folder, a missing or read-only place: said, not traced
        raise BrainMRIError(f"Cannot write {target}: {err}") from err
    except RuntimeError as err:  # an operation the format cannot express (its message goes on for pages)
        raise BrainMRIError(
            f"{checkpoint} cannot be exported as {format} at {contract['image_size']} px: "
            f"{first_sentences(str(err))} {EXPORT_HINTS.get(format, '')}"
        ) from None


def first_sentences(message: str) -> str:
    """What an exporter's error says, without its invitation to file an issue or the graph it quotes."""
    first = message.strip().splitlines()[0]
    for tail in (" Please feel free to request support", " [Caused by"):
        first = first.split(tail)[0]
    return first


EXPORT_HINTS = {
    "onnx": "(ONNX expresses VGG-11's pooling to 7x7 only at image sizes that are multiples of 224.) "
    "format=torchscript exports every model at any size."
}


@contextlib.contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """The process's standard output (file descriptor 1) goes nowhere for a while: when the
    TorchScript-based ONNX exporter (no onnxscript needed) fails, its C++ log prints the whole graph there,
    though its log is meant to be off (its check reads a function as true)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as nowhere:
            os.dup2(nowhere.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def write(model, contract: dict, format: str, target: Path) -> Path:
    """The traced network, taking a batch of any size, with the contract inside the file."""
    example = torch.rand(2, 3, contract["image_size"], contract["image_size"])
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Lightning's and torchmetrics' notices
            traced = model.to_torchscript(method="trace", example_inputs=example)  # Lightning's, jit-safe
        with atomic_path(target) as temporary:
            torch.jit.save(traced, str(temporary), _extra_files={"contract.json": json.dumps(contract)})
        return target
    try:
        import onnx
    except ImportError as err:
        raise BrainMRIError("ONNX export needs the export extra: pip install -e '.[export]'") from err
    with atomic_path(target) as temporary, warnings.catch_warnings(), native_stdout_silenced():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(temporary),
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        exported = onnx.load(str(temporary))
        for key, value in contract.items():
            exported.metadata_props.add(key=key, value=json.dumps(value))
        onnx.save(exported, str(temporary))
    return target
