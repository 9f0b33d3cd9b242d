"""Where an explanation points, against a box drawn around what should explain the class (a tumour):
the pointing game (does the map's peak fall in the box, give or take a few pixels), the share of the
map's mass inside the box, and the same for a map that knows nothing (the image's centre; a flat map).
And two checks: the same maps of the network with fresh random weights (a method whose maps still
point at the box then shows the image, not what the model learnt: Adebayo et al., "Sanity checks for
saliency maps", 2018), and how much the true class's probability falls when the box is hidden, against
an equal box elsewhere on the head."""

from __future__ import annotations

import copy

import numpy as np
import torch

from brain_mri.data.preprocessing import to_model_input
from brain_mri.models.classifier import BrainMRIClassifier
from brain_mri.models.explain import explanation


def input_batches(images: np.ndarray, device: str, batch: int):
    """(first index, model inputs on ``device``) of ``images`` (N, H, W) uint8 on the model's input,
    ``batch`` at a time."""
    for first in range(0, len(images), batch):
        yield first, to_model_input(torch.from_numpy(images[first : first + batch])[:, None]).to(device)


def true_class_maps(
    model: BrainMRIClassifier,
    images: np.ndarray,
    labels: np.ndarray,
    method: str,
    device: str = "cpu",
    batch: int = 64,
) -> np.ndarray:
    """(N, H, W) maps (``method``) of each image's true class; ``images`` (N, H, W) uint8 on the model's
    input."""
    found = []
    for first, inputs in input_batches(images, device, batch):
        targets = torch.from_numpy(labels[first : first + len(inputs)]).to(device)
        found.append(explanation(model, inputs, targets, method).cpu().numpy())
    return np.concatenate(found)


def with_random_weights(model: BrainMRIClassifier, seed: int = 0) -> BrainMRIClassifier:
    """A copy of ``model`` (each member of an ensemble) whose every layer is initialised afresh."""
    fresh = copy.deepcopy(model)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    for module in fresh.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    torch.random.set_rng_state(generator_state)
    return fresh


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


def control_boxes(images: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """For each box, a box of the same size elsewhere in the slice, for a control: its mirror image across
    the slice's vertical midline (the other hemisphere), else across the horizontal one, else both; the
    first that does not overlap the box and lies on the head (its pixels brighter, on average, than the
    slice's mean), else the one that overlaps the box least."""
    _, height, width = images.shape
    chosen = np.empty_like(boxes)
    for i, (image, box) in enumerate(zip(images, boxes, strict=True)):
        left, top, right, bottom = box
        candidates = [
            np.array([width - right, top, width - left, bottom]),
            np.array([left, height - bottom, right, height - top]),
            np.array([width - right, height - bottom, width - left, height - top]),
        ]
        fitting = [c for c in candidates if overlap(c, box) == 0 and on_head(image, c)]
        chosen[i] = fitting[0] if fitting else min(candidates, key=lambda c: overlap(c, box))
    return chosen


def overlap(one: np.ndarray, other: np.ndarray) -> float:
    """The area two boxes (left, top, right, bottom) share."""
    across = max(0.0, min(one[2], other[2]) - max(one[0], other[0]))
    down = max(0.0, min(one[3], other[3]) - max(one[1], other[1]))
    return float(across * down)


def pixels_in(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    left, top, right, bottom = (round(float(v)) for v in box)
    return image[top:bottom, left:right]


def on_head(image: np.ndarray, box: np.ndarray) -> bool:
    region = pixels_in(image, box)
    return region.size > 0 and region.mean() > image.mean()


def hidden(images: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``images`` (N, H, W, uint8) with each box filled by its slice's background (the 1st percentile of
    its pixels: the air around the head)."""
    filled = images.copy()
    for image, box in zip(filled, boxes, strict=True):
        pixels_in(image, box)[...] = np.percentile(image, 1)
    return filled


def class_probabilities(
    model: BrainMRIClassifier, images: np.ndarray, device: str = "cpu", batch: int = 64
) -> np.ndarray:
    """(N, classes): each image's probabilities; ``images`` (N, H, W) uint8 on the model's input."""
    found = []
    model.eval()  # batch norm with its running statistics, as in testing
    with torch.inference_mode():
        for _, inputs in input_batches(images, device, batch):
            out = model.predict_step((inputs, None), 0)
            found.append((out[0] if isinstance(out, tuple) else out).float().cpu().numpy())
    return np.concatenate(found)


def of_true_class(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return probabilities[np.arange(len(labels)), labels]
