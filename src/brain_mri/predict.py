"""The prediction task: a trained model (or ensemble) asked about new scans, no labels needed.

``python predict.py ckpt_path=<checkpoint | run folder | sweep folder> input=<image | folder>`` writes
``predictions.csv`` (and ``bad_images.csv``) into its own output folder; ``explain=true`` adds a Grad-CAM
overlay per image (``explanations/``). :func:`predict_files` is the same for notebooks.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig
from rich.progress import Progress

from brain_mri.data.folder import unreadable_reason
from brain_mri.errors import BrainMRIError
from brain_mri.explain import explanation_path, grad_cam, overlay
from brain_mri.hardware import autocast, precision_for_checkpoint
from brain_mri.models import BrainMRIClassifier
from brain_mri.models.loading import load_model
from brain_mri.preprocessing import model_pixels, read_grayscale, to_model_input
from brain_mri.run_outputs import (
    PREDICTIONS_FILE,
    CsvAppender,
    prediction_fields,
    prediction_row,
    walk_folders,
    write_bad_images,
)

log = logging.getLogger(__name__)


def input_files(source: str | Path, exclude: Path | None = None) -> list[Path]:
    """One file, or every file under a folder: recursively, following linked folders (each real folder
    once), in sorted order; hidden names and the ``exclude`` folder (the task's own output) left out."""
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BrainMRIError(f"input={source}: no such file or folder.")
    files = []
    for folder, subfolders, names in walk_folders(path, exclude):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        files += [folder / n for n in names if not n.startswith(".") and (folder / n).is_file()]
    if not files:
        raise BrainMRIError(f"input={source}: the folder holds no files.")
    return sorted(files)


def read_for_model(path: Path, model: BrainMRIClassifier, min_image_size: int = 32) -> np.ndarray:
    """The pixels of one file as the model's input contract asks (size, crop); files with a side under
    ``min_image_size`` pixels are refused, as training's ``data.min_image_size`` refuses them."""
    content = path.read_bytes()
    try:
        image = read_grayscale(io.BytesIO(content))
    except Exception as err:  # PIL raises many types for broken files; each becomes a reason
        raise BrainMRIError(unreadable_reason(content, err)) from err
    if min(image.size) < min_image_size:
        width, height = image.size
        raise BrainMRIError(f"too small: {width}x{height} pixels (min_image_size={min_image_size})")
    return model_pixels(image, model.hparams.image_size, model.hparams.get("crop", "none"))


class Prediction(NamedTuple):
    path: Path
    probabilities: np.ndarray  # one per class, in the order of model.hparams.class_names
    spread: float | None  # ensembles and test-time views: how much they disagree on the predicted class
    pixels: np.ndarray  # (H, W) in [0, 1]: the image as the model saw it
    heat_map: np.ndarray | None  # (H, W) in [0, 1]: Grad-CAM of the predicted class, when asked


def predict_files(
    model: BrainMRIClassifier,
    files: list[Path],
    batch_size: int = 64,
    chunk_size: int = 256,
    precision: str = "32-true",
    bad: list[tuple[str, str]] | None = None,
    progress: bool = True,
    explain: bool = False,
    cam_layer: str | None = None,
    min_image_size: int = 32,
) -> Iterator[Prediction]:
    """A :class:`Prediction` for every readable file, read ``chunk_size`` files at a time (bounded
    memory); ``explain`` adds the Grad-CAM map of the predicted class (on the model's own layer, or
    ``cam_layer``). Unreadable files and files with a side under ``min_image_size`` pixels are appended
    to ``bad`` as (path, reason), not raised."""
    bad = [] if bad is None else bad
    model.eval()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("Predicting", total=len(files))
        for start in range(0, len(files), chunk_size):
            chunk, pixels = [], []
            for path in files[start : start + chunk_size]:
                try:
                    pixels.append(read_for_model(path, model, min_image_size))
                    chunk.append(path)
                except (BrainMRIError, OSError) as err:
                    bad.append((str(path), str(err)))
            if chunk:
                images = to_model_input(torch.from_numpy(np.stack(pixels)).unsqueeze(1))
                for first in range(0, len(chunk), batch_size):
                    batch = images[first : first + batch_size]
                    with torch.inference_mode(), autocast(precision):
                        out = model.predict_step((batch, None), 0)
                    probabilities, spread = out if isinstance(out, tuple) else (out, None)
                    maps = None
                    if explain:
                        with autocast(precision):
                            maps = grad_cam(model, batch, probabilities.argmax(dim=1), cam_layer).numpy()
                    for i, row in enumerate(probabilities.float().numpy()):
                        yield Prediction(
                            chunk[first + i],
                            row,
                            None if spread is None else float(spread[i]),
                            batch[i, 0].float().numpy(),
                            None if maps is None else maps[i],
                        )
            bar.advance(task, len(files[start : start + chunk_size]))


def predict(cfg: DictConfig) -> float:
    """Predict every file of ``cfg.input``; returns the number of images predicted."""
    from brain_mri.settings import check_predict_settings

    check_predict_settings(cfg)
    model, checkpoints = load_model(str(cfg.ckpt_path), cfg.tta)
    precision, note = precision_for_checkpoint(model.provenance["precision"], "cpu")
    if note:
        log.warning("Predicting in %s: %s.", precision, note)
    output_dir = Path(cfg.paths.output_dir)
    files = input_files(cfg.input, exclude=output_dir)
    class_names = list(model.hparams.class_names)
    ensemble = len(checkpoints) > 1 or cfg.tta != "none"
    bad: list[tuple[str, str]] = []
    count = 0
    fields = prediction_fields(class_names, spread=ensemble, labelled=False, explained=cfg.explain)
    input_root = Path(cfg.input).expanduser()
    with CsvAppender(output_dir / PREDICTIONS_FILE, fields) as out:
        for found in predict_files(
            model,
            files,
            cfg.batch_size,
            cfg.chunk_size,
            precision,
            bad,
            cfg.progress,
            cfg.explain,
            cfg.cam_layer,
            cfg.min_image_size,
        ):
            row = prediction_row(
                str(found.path), found.probabilities.tolist(), class_names, spread=found.spread
            )
            if found.heat_map is not None:
                picture = explanation_path(output_dir, found.path, input_root)
                picture.parent.mkdir(parents=True, exist_ok=True)
                caption = f"{row['predicted_class']} {found.probabilities.max():.2f}"
                overlay(found.pixels, found.heat_map, caption).save(picture)
                row["explanation"] = picture.relative_to(output_dir).as_posix()
            out.write(row)
            count += 1
        write_bad_images(output_dir, bad)
        if bad:
            listing = "\n".join(f"  {path}: {reason}" for path, reason in bad)
            log.warning(
                "%d file(s) could not be read and were left out (bad_images.csv):\n%s", len(bad), listing
            )
        if not count:  # raised inside: no header-only predictions.csv is left
            raise BrainMRIError(
                f"None of the {len(files)} file(s) under {cfg.input} could be read as an image."
            )
    log.info(
        "Predicted %d image(s) with %d model(s); wrote %s",
        count,
        len(checkpoints),
        output_dir / PREDICTIONS_FILE,
    )
    return float(count)
