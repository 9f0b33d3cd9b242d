import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_cohen_kappa,
    binary_f1_score,
    binary_recall,
    binary_specificity,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_cohen_kappa,
    multiclass_f1_score,
    multiclass_recall,
    multiclass_specificity,
)

from brain_mri.report.statistics import binary_metrics, bootstrap_intervals, paired_difference


def simulated_predictions(n: int, seed: int = 0):
    """A classifier of moderate skill: positives score higher on average, with overlap and ties."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.6).astype(int)
    scores = np.clip(0.5 + 0.25 * (2 * labels - 1) + rng.normal(0, 0.25, n), 0, 1).round(2)
    return labels, scores


def two_columns(scores: np.ndarray) -> np.ndarray:
    return np.stack([1 - scores, scores], axis=1)


def test_metrics_agree_with_torchmetrics():
    labels, scores = simulated_predictions(200)
    ours = {k: float(v[0]) for k, v in binary_metrics(labels, scores).items()}
    p, y = torch.tensor(scores), torch.tensor(labels)
    expected = {
        "accuracy": binary_accuracy(p, y),
        "sensitivity": binary_recall(p, y),
        "specificity": binary_specificity(p, y),
        "auroc": binary_auroc(p, y),
        "f1": binary_f1_score(p, y),
        "cohen_kappa": binary_cohen_kappa(p, y),
    }
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value.item(), abs=1e-6), name


def test_intervals_contain_the_estimate_and_shrink_with_more_images():
    widths = []
    for n in (30, 300):
        labels, scores = simulated_predictions(n, seed=n)
        intervals = bootstrap_intervals(labels, two_columns(scores), resamples=1000, seed=0)
        for name, interval in intervals.items():
            assert interval["low"] <= interval["estimate"] <= interval["high"], name
        widths.append({name: i["high"] - i["low"] for name, i in intervals.items()})
    assert all(widths[1][name] < widths[0][name] for name in widths[0])


def test_intervals_are_reproducible_for_a_seed():
    labels, scores = simulated_predictions(40)
    assert bootstrap_intervals(labels, two_columns(scores), seed=3) == bootstrap_intervals(
        labels, two_columns(scores), seed=3
    )
    assert bootstrap_intervals(labels, two_columns(scores), seed=3) != bootstrap_intervals(
        labels, two_columns(scores), seed=4
    )


def test_undefined_resamples_are_ignored_not_zero():
    labels, scores = np.array([1, 0, 0, 0]), np.array([0.9, 0.2, 0.3, 0.1])
    sensitivity = bootstrap_intervals(labels, two_columns(scores), resamples=500)["sensitivity"]
    assert sensitivity == {"estimate": 1.0, "low": 1.0, "high": 1.0}


def test_multiclass_metrics_agree_with_torchmetrics():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 150)
    logits = rng.normal(0, 1, (150, 3)) + 1.5 * np.eye(3)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ours = bootstrap_intervals(labels, probabilities, positive=None, resamples=10)
    p, y = torch.tensor(probabilities), torch.tensor(labels)
    macro = {"num_classes": 3, "average": "macro"}
    expected = {
        "accuracy": multiclass_accuracy(p, y, num_classes=3, average="micro"),
        "sensitivity": multiclass_recall(p, y, **macro),
        "specificity": multiclass_specificity(p, y, **macro),
        "auroc": multiclass_auroc(p, y, **macro),
        "f1": multiclass_f1_score(p, y, **macro),
        "cohen_kappa": multiclass_cohen_kappa(p, y, num_classes=3),
    }
    for name, value in expected.items():
        assert ours[name]["estimate"] == pytest.approx(value.item(), abs=1e-6), name


def test_a_paired_difference_favours_the_better_of_two_models_on_the_same_images():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    perfect = np.stack([1 - labels, labels], axis=1).astype(float)
    guess = rng.random(60)
    coin = np.stack([1 - guess, guess], axis=1)
    better = paired_difference(labels, perfect, coin, positive=1, resamples=500)
    coin_auroc = np.mean([g > h for g in guess[labels == 1] for h in guess[labels == 0]])
    assert better["estimate"] == pytest.approx(1 - coin_auroc)
    assert better["low"] > 0 and better["share_not_better"] == 0.0 and better["images"] == 60
    worse = paired_difference(labels, coin, perfect, positive=1, resamples=500)
    assert worse["estimate"] == pytest.approx(-better["estimate"]) and worse["share_not_better"] == 1.0


def scans(count=40, seed=3):
    """Labels and (N, 2) probabilities of ``count`` distinct scans."""
    labels, scores = simulated_predictions(count, seed)
    return labels, two_columns(scores)


def test_an_interval_over_copies_of_scans_is_the_interval_over_the_scans():
    labels, probabilities = scans()
    copies = 5  # every scan five times, grouped as one scan
    rows = np.repeat(np.arange(len(labels)), copies)
    over_scans = bootstrap_intervals(labels, probabilities, resamples=500, seed=7)
    over_copies = bootstrap_intervals(labels[rows], probabilities[rows], resamples=500, seed=7, groups=rows)
    for name, interval in over_scans.items():
        assert over_copies[name] == pytest.approx(interval, nan_ok=True), name


def test_copies_counted_as_cases_would_narrow_the_interval_and_grouping_them_does_not():
    labels, probabilities = scans()
    rows = np.concatenate([np.arange(40), np.repeat(np.arange(5), 20)])  # 5 scans copied 20 times each
    grouped = bootstrap_intervals(labels[rows], probabilities[rows], resamples=500, seed=7, groups=rows)
    plain = bootstrap_intervals(labels[rows], probabilities[rows], resamples=500, seed=7)
    width = {name: v["high"] - v["low"] for name, v in grouped.items()}
    assert plain["auroc"]["high"] - plain["auroc"]["low"] < width["auroc"]  # the copies' false certainty


def test_a_paired_difference_resamples_scans_and_says_how_many():
    labels, first = scans(seed=4)
    second = first[:, ::-1].copy()  # a model that ranks every scan backwards
    rows = np.repeat(np.arange(len(labels)), 3)
    over_scans = paired_difference(labels, first, second, resamples=300, seed=2)
    over_copies = paired_difference(
        labels[rows], first[rows], second[rows], resamples=300, seed=2, groups=rows
    )
    assert (over_copies["images"], over_copies["scans"]) == (120, 40)
    for key in ("estimate", "low", "high", "share_not_better"):
        assert over_copies[key] == pytest.approx(over_scans[key]), key
