"""Tumour boxes: a CSV of ``path, x_center, y_center, width, height`` (fractions of the image's width and
height, paths relative to the data folder), read, checked, and placed on the model's input (after the
crop its input contract makes), for measuring where explanations point (``eval.py eval.boxes=``)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from brain_mri.data.folder import ImageFile
from brain_mri.data.preprocessing import brain_box, read_grayscale
from brain_mri.errors import BrainMRIError

BOX_FIELDS = ("path", "x_center", "y_center", "width", "height")
EDGE = 1e-3  # boxes drawn to the image's edge may pass it by rounding


def read_boxes(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """Each image's box as (left, top, right, bottom) fractions of its width and height."""
    if not path.is_file():
        raise BrainMRIError(f"eval.boxes={path}: no such file.")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [field for field in BOX_FIELDS if field not in (reader.fieldnames or [])]
        if missing:
            raise BrainMRIError(
                f"eval.boxes={path} lacks the column(s) {', '.join(missing)}: it needs "
                f"{', '.join(BOX_FIELDS)} (centre, width and height as fractions of the image's width and "
                "height)."
            )
        boxes = {}
        for number, row in enumerate(reader, start=2):  # the header is line 1
            try:
                x, y, width, height = (float(row[field]) for field in BOX_FIELDS[1:])
            except (TypeError, ValueError):
                raise BrainMRIError(
                    f"eval.boxes={path}, line {number} ({row['path']}): a value is not a number."
                ) from None
            box = (x - width / 2, y - height / 2, x + width / 2, y + height / 2)
            finite = all(math.isfinite(v) for v in box)
            if not finite or width <= 0 or height <= 0 or min(box) < -EDGE or max(box) > 1 + EDGE:
                raise BrainMRIError(
                    f"eval.boxes={path}, line {number} ({row['path']}): the box (centre {x}, {y}, size "
                    f"{width} x {height}) does not lie in [0, 1]: values are fractions of the image's width "
                    "and height."
                )
            boxes[row["path"]] = tuple(min(max(v, 0.0), 1.0) for v in box)
    return boxes  # type: ignore[return-value]


def boxes_on_input(
    boxes: dict[str, tuple[float, float, float, float]],
    files: list[ImageFile],
    root: Path,
    size: int,
    crop: str,
    source: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """The boxes of ``files`` in the model's input pixels (N, 4: left, top, right, bottom on the
    ``size`` x ``size`` input), and which files have one. Under ``crop=brain`` each box follows its
    image's crop: the image is read again to find it."""
    has = np.array([f.path in boxes for f in files])
    if not has.any():
        example = next(iter(boxes), "(none)")
        raise BrainMRIError(
            f"eval.boxes={source}: none of its {len(boxes)} paths is an evaluated image (e.g. '{example}'; "
            f"the images are named as '{files[0].path if files else ''}', relative to the data root {root})."
        )
    placed = np.zeros((len(files), 4))
    for i, file in enumerate(files):
        if not has[i]:
            continue
        left, top, right, bottom = boxes[file.path]
        if crop == "brain":  # fractions of the whole image -> of the crop
            image = read_grayscale(root / file.path)
            x0, y0, x1, y1 = brain_box(image)
            width, height = image.size
            left, right = ((v * width - x0) / (x1 - x0) for v in (left, right))
            top, bottom = ((v * height - y0) / (y1 - y0) for v in (top, bottom))
        placed[i] = np.clip([left, top, right, bottom], 0, 1) * size
    return placed, has
