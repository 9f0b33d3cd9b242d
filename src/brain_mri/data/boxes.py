"""Tumour boxes: a CSV of ``path, x_center, y_center, width, height`` (fractions of the image's width and
height, paths relative to the data folder), read, checked, and placed on the model's input (after the
crop its input contract makes), for measuring where explanations point (``eval.py eval.boxes=``)."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np

from brain_mri.data.folder import ImageFile
from brain_mri.data.preprocessing import brain_box, read_grayscale
from brain_mri.errors import BrainMRIError

BOX_FIELDS = ("path", "x_center", "y_center", "width", "height")
EDGE = 1e-3  # boxes drawn to the image's edge may pass it by rounding

log = logging.getLogger(__name__)


def read_boxes(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """Each image's box as (left, top, right, bottom) fractions of its width and height."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
            return boxes_of(csv.DictReader(handle), path)
    except UnicodeDecodeError as err:
        raise BrainMRIError(
            f"eval.boxes={path} is not UTF-8 text ({err.reason} at byte {err.start})."
        ) from None
    except OSError as err:  # eval.py checks that it is a file before any work; here, what reading found
        raise BrainMRIError(f"eval.boxes={path}: cannot be read ({err.strerror}).") from None


def boxes_of(reader: csv.DictReader, path: Path) -> dict[str, tuple[float, float, float, float]]:
    """The boxes of a read CSV file, each row checked."""
    if reader.fieldnames:  # "path, x_center": spaces after the commas are not part of the names
        reader.fieldnames = [name.strip() for name in reader.fieldnames]
    missing = [field for field in BOX_FIELDS if field not in (reader.fieldnames or [])]
    if missing:
        raise BrainMRIError(
            f"eval.boxes={path} lacks the column(s) {', '.join(missing)}: it needs {', '.join(BOX_FIELDS)} "
            "(centre, width and height as fractions of the image's width and height); its header is "
            f"{', '.join(reader.fieldnames or []) or 'empty'}."
        )
    boxes: dict[str, tuple[float, float, float, float]] = {}
    lines: dict[str, int] = {}
    for number, row in enumerate(reader, start=2):  # the header is line 1
        name = row["path"]
        if name in lines:
            raise BrainMRIError(
                f"eval.boxes={path}: {name} has two boxes (lines {lines[name]} and {number}); give each "
                "image one."
            )
        lines[name] = number
        absent = [field for field in BOX_FIELDS if row[field] is None]  # a short line
        if absent:
            raise BrainMRIError(
                f"eval.boxes={path}, line {number} ({name}): it ends before {', '.join(absent)}."
            )
        try:
            x, y, width, height = (float(row[field]) for field in BOX_FIELDS[1:])
        except (TypeError, ValueError):
            raise BrainMRIError(
                f"eval.boxes={path}, line {number} ({name}): a value is not a number."
            ) from None
        if not (width > 0 and height > 0):
            raise BrainMRIError(
                f"eval.boxes={path}, line {number} ({name}): the box has no area (size {width} x {height}); "
                "width and height must be above 0."
            )
        left, top, right, bottom = x - width / 2, y - height / 2, x + width / 2, y + height / 2
        box = (left, top, right, bottom)
        if not all(map(math.isfinite, box)) or min(box) < -EDGE or max(box) > 1 + EDGE:
            raise BrainMRIError(
                f"eval.boxes={path}, line {number} ({name}): the box (centre {x}, {y}, size {width} x "
                f"{height}) does not lie in [0, 1]: values are fractions of the image's width and height."
            )
        boxes[name] = (max(left, 0.0), max(top, 0.0), min(right, 1.0), min(bottom, 1.0))
    if not boxes:
        raise BrainMRIError(f"eval.boxes={path} holds no boxes: only a header, or nothing.")
    return boxes


def boxes_on_input(
    boxes: dict[str, tuple[float, float, float, float]],
    files: list[ImageFile],
    root: Path,
    size: int,
    crop: str,
    source: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """The boxes of ``files`` in the model's input pixels (N, 4: left, top, right, bottom on the
    ``size`` x ``size`` input), and which files have one (a warning says how many have none, and how many
    lost theirs to the crop). Under ``crop=brain`` each box follows its image's crop: the image is read
    again to find it."""
    has = np.array([f.path in boxes for f in files])
    if not has.any():
        example = next(iter(boxes))
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
    outside = has & ((placed[:, 2] <= placed[:, 0]) | (placed[:, 3] <= placed[:, 1]))
    if outside.any():  # the crop cut the box away: nothing of it is on the model's input
        log.warning(
            "%d box(es) of eval.boxes lie outside their image's brain crop (e.g. %s): those images are "
            "left out as images without a box.",
            int(outside.sum()),
            files[int(np.flatnonzero(outside)[0])].path,
        )
    if not has.all():
        log.warning(
            "%d of the %d evaluated images have no box in %s (e.g. %s): they are left out of the box "
            "figures.",
            int((~has).sum()),
            len(has),
            source,
            files[int(np.flatnonzero(~has)[0])].path,
        )
    return placed, has & ~outside
