"""The prediction task: a trained model (or ensemble) asked about new scans, no labels needed.

``python predict.py ckpt_path=<checkpoint | run folder | sweep folder> input=<image | folder>`` writes
``predictions.csv`` (and ``bad_images.csv``) into its own output folder; ``explain=true`` adds a Grad-CAM
overlay per image (``explanations/``). :func:`predict_files` is the same for notebooks.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from brain_mri.atomic import atomic_path
from brain_mri.errors import BrainMRIError
from brain_mri.hardware import precision_for_checkpoint, uses_cuda
from brain_mri.models.explain import explanation_path, overlay
from brain_mri.models.inference import predict_files
from brain_mri.models.loading import load_model
from brain_mri.runs.files import (
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
        # a broken link is listed too: reading it says why it is left out
        files += [folder / n for n in names if not n.startswith(".") and not (folder / n).is_dir()]
    if not files:
        raise BrainMRIError(f"input={source}: the folder holds no files.")
    return sorted(files)


def predict(cfg: DictConfig) -> float:
    """Predict every file of ``cfg.input``; returns the number of images predicted."""
    from brain_mri.config.settings import check_predict_settings

    check_predict_settings(cfg)
    model, checkpoints = load_model(str(cfg.ckpt_path), cfg.tta)
    device = "cuda" if uses_cuda(cfg.device) else "cpu"
    model.to(device)
    precision, note = precision_for_checkpoint(model.provenance["precision"], device)
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
            device,
        ):
            row = prediction_row(
                str(found.path), found.probabilities.tolist(), class_names, spread=found.spread
            )
            if found.heat_map is not None:
                picture = explanation_path(output_dir, found.path, input_root)
                picture.parent.mkdir(parents=True, exist_ok=True)
                caption = f"{row['predicted_class']} {found.probabilities.max():.2f}"
                with atomic_path(picture) as temporary:
                    overlay(found.pixels, found.heat_map, caption).save(temporary)
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
