"""Where an explanation points, against a box drawn around what should explain the class (a tumour):
the pointing game (does the map's peak fall in the box, give or take a few pixels), the share of the
map's mass inside the box, and the same for a map that knows nothing (the image's centre; a flat map)."""

from __future__ import annotations

import numpy as np

from brain_mri.models.classifier import BrainMRIClassifier
from brain_mri.models.explain import explanation


def true_class_maps(model: BrainMRIClassifier, batches, method: str, device: str = "cpu") -> np.ndarray:
    """(N, H, W) maps (``method``) of each image's true class, for (images, labels) batches of model input."""
    found = []
    for images, labels in batches:
        found.append(explanation(model, images.to(device), labels.to(device), method).cpu().numpy())
    return np.concatenate(found)


def pixel_centres_inside(boxes: np.ndarray, height: int, width: int, margin: float = 0.0) -> np.ndarray:
    """(N, H, W): which pixels' centres lie in each box (left, top, right, bottom, in pixels), widened by
    ``margin`` pixels on every side."""
    xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
    left, top, right, bottom = (boxes[:, i, None] for i in range(4))
    across = (xs[None] >= left - margin) & (xs[None] <= right + margin)
    down = (ys[None] >= top - margin) & (ys[None] <= bottom + margin)
    return down[:, :, None] & across[:, None, :]


def localisation(maps: np.ndarray, boxes: np.ndarray, tolerance: float) -> dict[str, np.ndarray]:
    """Per image: ``pointing_game`` (1 when the map's peak is in the box widened by ``tolerance``
    pixels), ``mass_in_box`` (the map's share inside the box); an empty map (no evidence for the class)
    points nowhere and has no mass in the box. And the baselines
    ``centre_pointing_game`` (the image's centre as the peak) and ``flat_mass_in_box`` (the box's share of
    the image)."""
    count, height, width = maps.shape
    inside = pixel_centres_inside(boxes, height, width)
    widened = pixel_centres_inside(boxes, height, width, margin=tolerance)
    peaks = maps.reshape(count, -1).argmax(axis=1)
    total = maps.reshape(count, -1).sum(axis=1)
    in_box = (maps * inside).reshape(count, -1).sum(axis=1)
    centre = np.array([[width / 2, height / 2]])
    left, top, right, bottom = boxes.T
    return {
        "pointing_game": (widened.reshape(count, -1)[np.arange(count), peaks] & (total > 0)).astype(float),
        "mass_in_box": np.divide(in_box, total, out=np.zeros(count), where=total > 0),
        "centre_pointing_game": (
            (centre[:, 0] >= left - tolerance)
            & (centre[:, 0] <= right + tolerance)
            & (centre[:, 1] >= top - tolerance)
            & (centre[:, 1] <= bottom + tolerance)
        ).astype(float),
        "flat_mass_in_box": inside.reshape(count, -1).mean(axis=1),
    }
