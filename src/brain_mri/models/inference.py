"""Predictions for image files, read a chunk at a time, with Grad-CAM maps when asked: what the
prediction task, the training run's gallery, benchmarks and notebooks share."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from rich.progress import Progress

from brain_mri.data.folder import unreadable_reason
from brain_mri.data.preprocessing import model_pixels, read_grayscale, to_model_input
from brain_mri.errors import BrainMRIError
from brain_mri.hardware import autocast
from brain_mri.models.classifier import BrainMRIClassifier
from brain_mri.models.explain import DEFAULT_METHOD, explanation


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
    explain: bool | str = False,
    cam_layer: str | None = None,
    min_image_size: int = 32,
    device: str = "cpu",
) -> Iterator[Prediction]:
    """A :class:`Prediction` for every readable file, read ``chunk_size`` files at a time (bounded
    memory); ``explain`` (True: the default method, or a method's name) adds the map of the predicted
    class (on the model's own Grad-CAM layer, or ``cam_layer``). Unreadable files and files with a side
    under ``min_image_size`` pixels are appended to ``bad`` as (path, reason), not raised. The model must
    be on ``device`` (cpu or cuda)."""
    bad = [] if bad is None else bad
    method = DEFAULT_METHOD if explain is True else explain or None
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
                    batch = images[first : first + batch_size].to(device)
                    with torch.inference_mode(), autocast(precision, device):
                        out = model.predict_step((batch, None), 0)
                    probabilities, spread = out if isinstance(out, tuple) else (out, None)
                    maps = None
                    if method:
                        with autocast(precision, device):
                            maps = (
                                explanation(model, batch, probabilities.argmax(dim=1), method, cam_layer)
                                .cpu()
                                .numpy()
                            )
                    for i, row in enumerate(probabilities.float().cpu().numpy()):
                        yield Prediction(
                            chunk[first + i],
                            row,
                            None if spread is None else float(spread[i]),
                            batch[i, 0].float().cpu().numpy(),
                            None if maps is None else maps[i],
                        )
            bar.advance(task, len(files[start : start + chunk_size]))
