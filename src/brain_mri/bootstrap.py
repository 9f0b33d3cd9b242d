"""Test metrics from a predictions file, and bootstrap confidence intervals for them.

The metrics are written out in NumPy, vectorised over bootstrap resamples; a test checks that they agree
with the torchmetrics values a run logs. Undefined values (no positives in a resample) are NaN.
"""

from __future__ import annotations

import numpy as np

METRIC_NAMES = ("accuracy", "sensitivity", "specificity", "auroc", "f1", "cohen_kappa")


def _auroc(labels: np.ndarray, scores: np.ndarray, chunk_elements: int = 50_000_000) -> np.ndarray:
    """Probability that a positive outranks a negative (ties count half), per row."""
    result = np.empty(len(labels))
    rows_per_chunk = max(1, chunk_elements // labels.shape[1] ** 2)
    for start in range(0, len(labels), rows_per_chunk):
        y, s = labels[start : start + rows_per_chunk] == 1, scores[start : start + rows_per_chunk]
        pairs = y[:, :, None] & ~y[:, None, :]
        wins = (s[:, :, None] > s[:, None, :]) + 0.5 * (s[:, :, None] == s[:, None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            result[start : start + rows_per_chunk] = (wins * pairs).sum((1, 2)) / pairs.sum((1, 2))
    return result


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of ``METRIC_NAMES`` for each row of (R, N) labels and positive-class probabilities.

    A prediction is positive when its probability exceeds 0.5, as in torchmetrics.
    """
    labels, probabilities = np.atleast_2d(labels), np.atleast_2d(probabilities)
    predicted, positive = probabilities > 0.5, labels == 1
    tp = (predicted & positive).sum(1)
    tn = (~predicted & ~positive).sum(1)
    fp = (predicted & ~positive).sum(1)
    fn = (~predicted & positive).sum(1)
    n = labels.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = (tp + tn) / n
        chance = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
        return {
            "accuracy": accuracy,
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "auroc": _auroc(labels, probabilities),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "cohen_kappa": (accuracy - chance) / (1 - chance),
        }


def bootstrap_intervals(
    labels: np.ndarray, probabilities: np.ndarray, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Point estimate and percentile interval of each metric, resampling test images with replacement."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype=float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(resamples, len(labels)))
    point = binary_metrics(labels, probabilities)
    resampled = binary_metrics(labels[draws], probabilities[draws])
    tail = 100 * (1 - level) / 2
    return {
        name: {
            "estimate": float(point[name][0]),
            "low": float(np.nanpercentile(resampled[name], tail)),
            "high": float(np.nanpercentile(resampled[name], 100 - tail)),
        }
        for name in METRIC_NAMES
    }
