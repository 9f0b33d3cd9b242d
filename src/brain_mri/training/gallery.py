"""Galleries: test images under their maps, misclassified first, written by the task that made the
predictions (``gallery/`` and ``gallery.csv``) and shown by the report page, which reads files only. A
training run draws its test images' Grad-CAM of the predicted class; an evaluation against boxes draws the
true class's maps with each box and the map's peak."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brain_mri.atomic import atomic_path
from brain_mri.data.folder import ImageFile
from brain_mri.models.classifier import BrainMRIClassifier
from brain_mri.models.explain import overlay
from brain_mri.models.inference import predict_files
from brain_mri.runs.files import (
    BOX_GALLERY_FIELDS,
    GALLERY_DIR,
    GALLERY_FIELDS,
    GALLERY_FILE,
    PREDICTIONS_FILE,
    read_csv,
    write_csv,
)

log = logging.getLogger(__name__)


def shown_first(images: Sequence[tuple[bool, str, str]]) -> list[int]:
    """The order a gallery draws ``images`` (misclassified, class, path) in: the misclassified first, then
    the rest one class after the other in turn (so a short gallery shows every class), each in path
    order."""
    ranks: dict[tuple[bool, str], int] = {}
    keyed = []
    for i in sorted(range(len(images)), key=lambda i: images[i][2]):
        wrong, class_name, path = images[i]
        rank = ranks[(wrong, class_name)] = ranks.get((wrong, class_name), -1) + 1
        keyed.append(((not wrong, path if wrong else "", rank, class_name), i))
    return [i for _, i in sorted(keyed)]


def write_gallery(run_dir: Path, model: BrainMRIClassifier, data_root: Path, limit: int) -> int:
    """Grad-CAM overlays of up to ``limit`` of the run's test images (``predictions.csv``, paths under
    ``data_root``), misclassified first; returns how many were written."""
    rows = read_csv(run_dir / PREDICTIONS_FILE)
    order = shown_first([(r["predicted_class"] != r["class"], r["class"], r["path"]) for r in rows])
    rows = [rows[i] for i in order[:limit]]
    by_file = {data_root / r["path"]: r for r in rows}
    # the run read every one of them: no size limit of its own here
    unread: list[tuple[str, str]] = []
    found = predict_files(model, list(by_file), progress=False, explain=True, min_image_size=1, bad=unread)
    (run_dir / GALLERY_DIR).mkdir(exist_ok=True)
    shown = []
    for number, prediction in enumerate(found):
        row = by_file[prediction.path]
        image = f"{GALLERY_DIR}/{number:03d}.png"
        caption = f"{row['predicted_class']} {prediction.probabilities.max():.2f}"
        assert prediction.heat_map is not None  # explain=True
        with atomic_path(run_dir / image) as temporary:
            overlay(prediction.pixels, prediction.heat_map, caption).save(temporary)
        shown.append({"image": image, "probability": float(prediction.probabilities.max())} | row)
    write_csv(run_dir / GALLERY_FILE, shown, GALLERY_FIELDS)
    if unread:
        log.warning(
            "%d of the %d test images drawn for the gallery could not be read again (the data changed since "
            "they were decoded?), e.g. %s: %s",
            len(unread),
            len(rows),
            *unread[0],
        )
    return len(shown)


def write_box_gallery(
    output_dir: Path,
    files: Sequence[ImageFile],
    images: np.ndarray,
    maps: np.ndarray,
    boxes: np.ndarray,
    hits: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    limit: int,
) -> int:
    """Up to ``limit`` of the evaluated ``files`` (``images``: (N, H, W) uint8 as the model saw them) under
    their true class's ``maps``, with their ``boxes`` and each map's peak, misclassified first; ``hits``
    (the pointing game's score of each image) fills the ``peak`` column: in box, outside box, or none (an
    empty map: no evidence for the class). Returns how many were written."""
    predicted = probabilities.argmax(axis=1)
    order = shown_first([(predicted[i] != f.label, f.class_name, f.path) for i, f in enumerate(files)])
    (output_dir / GALLERY_DIR).mkdir(parents=True, exist_ok=True)
    shown = []
    for number, i in enumerate(order[:limit]):
        image = f"{GALLERY_DIR}/{number:03d}.png"
        true_probability = float(probabilities[i, files[i].label])
        caption = f"true {files[i].class_name} {true_probability:.2f}"
        with atomic_path(output_dir / image) as temporary:
            overlay(images[i] / 255.0, maps[i], caption, box=boxes[i]).save(temporary)
        shown.append(
            {
                "image": image,
                "path": files[i].path,
                "class": files[i].class_name,
                "predicted_class": class_names[predicted[i]],
                "probability": float(probabilities[i, predicted[i]]),
                "true_class_probability": true_probability,
                "peak": "in box" if hits[i] else "outside box" if maps[i].max() > 0 else "none",
            }
        )
    write_csv(output_dir / GALLERY_FILE, shown, BOX_GALLERY_FIELDS)
    return len(shown)
