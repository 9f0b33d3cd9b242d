"""A run's test images under their Grad-CAM maps, misclassified first: written by the training run that
made the predictions (``gallery/`` and ``gallery.csv``), shown by the report page, which reads files only."""

from __future__ import annotations

import logging
from pathlib import Path

from brain_mri.atomic import atomic_path
from brain_mri.models.classifier import BrainMRIClassifier
from brain_mri.models.explain import overlay
from brain_mri.models.inference import predict_files
from brain_mri.runs.files import (
    GALLERY_DIR,
    GALLERY_FIELDS,
    GALLERY_FILE,
    PREDICTIONS_FILE,
    read_csv,
    write_csv,
)

log = logging.getLogger(__name__)


def write_gallery(run_dir: Path, model: BrainMRIClassifier, data_root: Path, limit: int) -> int:
    """Grad-CAM overlays of up to ``limit`` of the run's test images (``predictions.csv``, paths under
    ``data_root``), misclassified first; returns how many were written."""
    rows = read_csv(run_dir / PREDICTIONS_FILE)
    rows.sort(key=lambda r: (r["predicted_class"] == r["class"], r["path"]))
    rows = rows[:limit]
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
