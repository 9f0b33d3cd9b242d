"""The report's figures, drawn from what runs wrote (no model is loaded)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # figures without pyplot: no display, no global state
from matplotlib.ticker import MaxNLocator


def _save(figure, path: Path) -> Path:
    """Drawn to a temporary file and renamed into place, like every file the project writes."""
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        figure.savefig(temporary, dpi=120)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def grid_3d(rows: list[dict], path: Path) -> Path:
    """The study's Figure 3: batch size, learning rate (log) and minimum validation loss, per architecture."""
    figure = Figure(figsize=(7, 5.5))
    axes = figure.add_subplot(projection="3d")
    for arch in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == arch]
        axes.scatter(
            [r["batch_size"] for r in mine],
            [np.log10(r["lr"]) for r in mine],
            [r["val_loss_best"] for r in mine],
            label=arch,
            s=30,
            depthshade=False,
        )
    axes.set_xlabel("batch size")
    axes.set_ylabel("log10 learning rate")
    axes.set_zlabel("min validation loss")
    axes.legend(loc="upper left")
    return _save(figure, path)


def curves(epochs: list[dict], best_epoch: int | None, title: str, path: Path) -> Path:
    """Training and validation loss and accuracy per epoch, the best epoch marked (Figures 4 and 5)."""
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for stage in ("train", "val"):
            points = [
                (e["epoch"], e[f"{stage}/{metric}"]) for e in epochs if e.get(f"{stage}/{metric}") is not None
            ]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", ms=3, label=stage)
        if best_epoch is not None:
            axis.axvline(best_epoch, color="grey", linestyle="--", label="best")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(metric)
        axis.legend()
    figure.suptitle(title)
    return _save(figure, path)


def roc(
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: list[str],
    positive: int | None,
    auroc: float,
    title: str,
    path: Path,
) -> Path:
    """The positive class's ROC curve (two classes), or one curve per class against the rest (more)."""
    figure = Figure(figsize=(4.5, 4.5))
    axis = figure.subplots()
    for k in [positive] if positive is not None else range(len(classes)):
        scores, hits = probabilities[:, k], labels == k
        thresholds = np.unique(scores)[::-1]  # tied scores make one diagonal step, as AUROC counts them
        tpr = [0.0] + [(hits & (scores >= t)).sum() / max(hits.sum(), 1) for t in thresholds]
        fpr = [0.0] + [(~hits & (scores >= t)).sum() / max((~hits).sum(), 1) for t in thresholds]
        axis.plot(fpr, tpr, label=f"AUROC {auroc:.3f}" if positive is not None else f"{classes[k]} vs rest")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axis.set_xlabel("1 - specificity")
    axis.set_ylabel("sensitivity")
    axis.set_title(title if positive is not None else f"{title} (macro AUROC {auroc:.3f})")
    axis.legend(loc="lower right")
    return _save(figure, path)


def confusion_figure(labels: np.ndarray, predicted: np.ndarray, classes: list[str], title: str) -> Figure:
    counts = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(counts, (labels, predicted), 1)
    figure = Figure(figsize=(4, 3.6))
    axis = figure.subplots()
    axis.imshow(counts, cmap="Blues")
    for (i, j), count in np.ndenumerate(counts):
        axis.text(j, i, str(count), ha="center", va="center", color="black", fontsize=14)
    axis.set_xticks(range(len(classes)), classes)
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def confusion(labels: np.ndarray, predicted: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    return _save(confusion_figure(labels, predicted, classes, title), path)


def image_grid(
    images: np.ndarray, captions: list[str], columns: int = 4, heat_maps: np.ndarray | None = None
) -> Figure:
    """Grayscale images (N, H, W) in [0, 1] with a caption each (e.g. the prediction and the truth), and
    over each its heat map (N, H, W in [0, 1]; Grad-CAM) when given, transparent where cold."""
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(2.2 * columns, 2.4 * rows))
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axis in axes:
        axis.axis("off")
    for i, (axis, image, caption) in enumerate(zip(axes, images, captions, strict=False)):
        axis.imshow(image, cmap="gray", vmin=0, vmax=1)
        if heat_maps is not None:
            axis.imshow(heat_maps[i], cmap="jet", vmin=0, vmax=1, alpha=0.6 * np.clip(heat_maps[i], 0, 1))
        axis.set_title(caption, fontsize=8)
    figure.tight_layout()
    return figure
