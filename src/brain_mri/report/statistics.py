"""Test metrics from a predictions file, and bootstrap confidence intervals for them.

The metrics are written out in NumPy, vectorised over bootstrap resamples; a test checks that they agree
with the torchmetrics values a run logs. Undefined values (no positives in a resample) are NaN.
Resamples draw whole scans (duplicate groups), not images: copies of one scan are one case, so they
widen nothing and narrow nothing.
"""

from __future__ import annotations

import warnings

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


def multiclass_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """``METRIC_NAMES`` for each row of (R, N) labels and (R, N, K) class probabilities, as torchmetrics
    computes them for more than two classes: accuracy over all images; sensitivity (recall), specificity,
    F1 and AUROC per class against the rest, averaged over the classes (macro); Cohen's kappa."""
    labels, probabilities = np.atleast_2d(labels), np.asarray(probabilities, dtype=float)
    if probabilities.ndim == 2:
        probabilities = probabilities[None]
    classes, n = probabilities.shape[-1], labels.shape[1]
    predicted = probabilities.argmax(-1)
    per_class: dict[str, list[np.ndarray]] = {"sensitivity": [], "specificity": [], "f1": [], "auroc": []}
    chance = np.zeros(len(labels))
    for k in range(classes):
        positive, called = labels == k, predicted == k
        tp, fp = (called & positive).sum(1), (called & ~positive).sum(1)
        fn, tn = (~called & positive).sum(1), (~called & ~positive).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class["sensitivity"].append(tp / (tp + fn))
            per_class["specificity"].append(tn / (tn + fp))
            per_class["f1"].append(2 * tp / (2 * tp + fp + fn))
        per_class["auroc"].append(_auroc(positive.astype(int), probabilities[..., k]))
        chance += (tp + fp) * (tp + fn) / n**2
    accuracy = (predicted == labels).mean(1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from a resample: NaN, left out
        return {
            "accuracy": accuracy,
            **{name: np.nanmean(np.stack(values), axis=0) for name, values in per_class.items()},
            "cohen_kappa": (accuracy - chance) / (1 - chance),
        }


def metrics_of(labels: np.ndarray, probabilities: np.ndarray, positive: int | None) -> dict[str, np.ndarray]:
    """Binary metrics of the ``positive`` class for two classes, macro metrics for more."""
    if positive is None:
        return multiclass_metrics(labels, probabilities)
    return binary_metrics((labels == positive).astype(int), probabilities[..., positive])


def positive_label(classes: list[str], positive_class: str | None) -> int | None:
    """The label whose binary metrics a two-class run reports (``yes`` for runs from before it was
    recorded); None for more classes, whose metrics are macro averages."""
    if len(classes) != 2:
        return None
    return (
        classes.index(positive_class)
        if positive_class in classes
        else classes.index("yes")
        if "yes" in classes
        else 1
    )


def metrics_by_source(
    labels: np.ndarray, probabilities: np.ndarray, sources: list[str], positive: int | None
) -> dict[str, dict[str, float | None]]:
    """Each source's metrics (point estimates; None where undefined, e.g. a class missing) and image
    count: how a model fares per hospital."""
    found = {}
    for source in sorted(set(sources)):
        rows = np.flatnonzero(np.array(sources) == source)
        values = metrics_of(labels[rows][None], np.asarray(probabilities, dtype=float)[rows][None], positive)
        finite = {name: float(values[name][0]) for name in METRIC_NAMES}
        found[source] = {k: (None if np.isnan(v) else v) for k, v in finite.items()} | {"images": len(rows)}
    return found


def resampled_rows(groups: np.ndarray, resamples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The rows of each resample: as many groups as there are, drawn with replacement, each with all its
    rows. With one row per group this is the plain bootstrap of rows (the same draws for the same seed)."""
    _, first, inverse, sizes = np.unique(groups, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first)  # groups numbered by their first row, as the rows come
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    inverse, sizes = rank[inverse], sizes[order]
    by_group = np.argsort(inverse, kind="stable")  # rows, group after group
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    draws = rng.integers(0, len(sizes), size=(resamples, len(sizes)))
    rows = []
    for draw in draws:
        counts = sizes[draw]
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        rows.append(by_group[np.repeat(starts[draw], counts) + offsets])
    return rows


def metrics_of_resamples(
    rows: list[np.ndarray], labels: np.ndarray, probabilities: np.ndarray, positive: int | None
) -> dict[str, np.ndarray]:
    """``metrics_of`` each resample's rows, vectorised over the resamples of equal length."""
    values = {name: np.empty(len(rows)) for name in METRIC_NAMES}
    lengths = np.array([len(r) for r in rows])
    for length in np.unique(lengths):
        chosen = np.flatnonzero(lengths == length)
        stacked = np.stack([rows[i] for i in chosen])
        for name, found in metrics_of(labels[stacked], probabilities[stacked], positive).items():
            values[name][chosen] = found
    return values


def bootstrap_intervals(
    labels: np.ndarray,
    probabilities: np.ndarray,
    positive: int | None = 1,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Point estimate and percentile interval of each metric, resampling the scans (``groups``: each
    image's duplicate group; None: every image its own) with replacement. ``probabilities`` is (N, K);
    ``positive`` the label of the positive class (two classes) or None."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype=float)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    rows = resampled_rows(groups, resamples, np.random.default_rng(seed))
    point = metrics_of(labels[None], probabilities[None], positive)
    resampled = metrics_of_resamples(rows, labels, probabilities, positive)
    tail = 100 * (1 - level) / 2
    return {
        name: {
            "estimate": float(point[name][0]),
            "low": float(np.nanpercentile(resampled[name], tail)),
            "high": float(np.nanpercentile(resampled[name], 100 - tail)),
        }
        for name in METRIC_NAMES
    }


def mean_intervals(
    values: dict[str, np.ndarray],
    groups: np.ndarray,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Mean and percentile interval of per-image ``values``, resampling the scans (``groups``) as
    :func:`bootstrap_intervals` does."""
    rows = resampled_rows(np.asarray(groups), resamples, np.random.default_rng(seed))
    tail = 100 * (1 - level) / 2
    found = {}
    for name, per_image in values.items():
        means = np.array([per_image[r].mean() for r in rows])
        found[name] = {
            "estimate": float(per_image.mean()),
            "low": float(np.percentile(means, tail)),
            "high": float(np.percentile(means, 100 - tail)),
        }
    return found


def paired_difference(
    labels: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    positive: int | None = 1,
    metric: str = "auroc",
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """``metric`` of ``first`` minus that of ``second`` (both (N, K) probabilities of the same images),
    with a percentile interval from resampling the scans (``groups``, as in :func:`bootstrap_intervals`;
    the same draw for both, so the difference keeps what the two share), and the share of resamples in
    which ``first`` is not better."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    rows = resampled_rows(groups, resamples, np.random.default_rng(seed))
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    point = (
        metrics_of(labels[None], first[None], positive)[metric]
        - metrics_of(labels[None], second[None], positive)[metric]
    )
    resampled = (
        metrics_of_resamples(rows, labels, first, positive)[metric]
        - metrics_of_resamples(rows, labels, second, positive)[metric]
    )
    tail = 100 * (1 - level) / 2
    return {
        "estimate": float(point[0]),
        "low": float(np.nanpercentile(resampled, tail)),
        "high": float(np.nanpercentile(resampled, 100 - tail)),
        "share_not_better": float(np.mean(resampled[~np.isnan(resampled)] <= 0)),
        "images": len(labels),
        "scans": len(np.unique(groups)),
    }
