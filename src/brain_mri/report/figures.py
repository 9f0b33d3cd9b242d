"""The report's figures, drawn from what runs wrote (no model is loaded)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # figures without pyplot: no display, no global state
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

from brain_mri.atomic import atomic_path


def _save(figure, path: Path) -> Path:
    """Drawn to a temporary file and renamed into place, like every file the project writes. Names that
    are not valid UTF-8 (kept byte for byte from the file system) are drawn with escapes."""
    for text in figure.findobj(Text):
        text.set_text(displayable(text.get_text()))
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120)
    return path


def displayable(text: str) -> str:
    """``text`` with the undecodable bytes of a file name (``os.fsdecode``'s surrogates) as escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


SETTING_LABELS = {"batch_size": "batch size", "lr": "learning rate", "weight_decay": "weight decay"}
LOG_SETTINGS = ("lr", "weight_decay")  # spread over decades: drawn on a log scale
LOSS = "min validation loss"


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _text(value) -> str:
    """A setting's value as a tick label: 0.0001, not 1e-04; 32, not 32.0."""
    return f"{float(value):g}" if _is_number(value) else str(value)


def _levels(rows: list[dict], setting: str) -> list:
    """The values a setting takes, numbers in ascending order, anything else by its text."""
    values = {r[setting] for r in rows}
    return sorted(values, key=float) if all(map(_is_number, values)) else sorted(values, key=str)


def _losses(rows: list[dict], values: dict) -> list[float]:
    """The losses of the runs with these settings."""
    return [r["val_loss_best"] for r in rows if all(r[k] == v for k, v in values.items())]


def _loss_label(rows: list[dict], settings: list[str]) -> str:
    """Says when a point or cell is a mean: several runs (folds, seeds) share its settings."""
    shared = len({tuple(r[s] for s in settings) for r in rows}) < len(rows)
    return f"{LOSS} (mean over runs)" if shared else LOSS


def grid_figure(rows: list[dict], settings: list[str], title: str) -> Figure:
    """Minimum validation loss over the swept ``settings`` (keys of ``rows``): one bar per run when none is
    swept, a line (numbers) or bars (names) for one, an annotated heat map for two, and for three or
    more the study's Figure 3, a 3-D scatter (two settings on axes, the others as colours)."""
    rows = [r for r in rows if r["val_loss_best"] is not None and math.isfinite(r["val_loss_best"])]
    figure = Figure(figsize=(7, 5.5) if len(settings) > 2 else (6.5, 4.5))
    if not settings:
        axis = figure.subplots()
        axis.bar(range(len(rows)), [r["val_loss_best"] for r in rows], tick_label=[r["run"] for r in rows])
        axis.set_xlabel("run (no setting swept)")
        axis.set_ylabel(LOSS)
    elif len(settings) == 1:
        _line(figure.subplots(), rows, settings[0])
    elif len(settings) == 2:
        _heat_map(figure, rows, *settings)
    else:
        _scatter_3d(figure, rows, settings)
    figure.suptitle(title)
    return figure


def grid(rows: list[dict], settings: list[str], title: str, path: Path) -> Path:
    return _save(grid_figure(rows, settings, title), path)


def _line(axis, rows: list[dict], setting: str) -> None:
    levels = _levels(rows, setting)
    means = [statistics.fmean(_losses(rows, {setting: level})) for level in levels]
    if all(map(_is_number, levels)):
        positions = [float(level) for level in levels]
        axis.plot(positions, means, marker="o")
        if len(rows) > len(levels):  # the runs behind each mean
            runs = [float(r[setting]) for r in rows]
            axis.scatter(runs, [r["val_loss_best"] for r in rows], s=10, c="grey")
        if setting in LOG_SETTINGS and min(positions) > 0:
            axis.set_xscale("log")
        axis.set_xticks(positions, [_text(level) for level in levels])
        axis.minorticks_off()
    else:
        axis.bar(range(len(levels)), means, tick_label=[_text(level) for level in levels])
    axis.set_xlabel(SETTING_LABELS.get(setting, setting))
    axis.set_ylabel(_loss_label(rows, [setting]))


def _heat_map(figure: Figure, rows: list[dict], down: str, across: str) -> None:
    """One cell per pair of values, annotated with its loss; pairs that did not run stay blank."""
    axis = figure.subplots()
    ys, xs = _levels(rows, down), _levels(rows, across)
    cells = np.full((len(ys), len(xs)), np.nan)
    for (i, j), _ in np.ndenumerate(cells):
        losses = _losses(rows, {down: ys[i], across: xs[j]})
        if losses:
            cells[i, j] = statistics.fmean(losses)
    image = axis.imshow(np.ma.masked_invalid(cells), cmap="viridis_r", aspect="auto")
    middle = (np.nanmin(cells) + np.nanmax(cells)) / 2
    for (i, j), loss in np.ndenumerate(cells):
        if not np.isnan(loss):  # white on the dark (high) half of the colour map
            colour = "white" if loss > middle else "black"
            axis.text(j, i, f"{loss:.3g}", ha="center", va="center", color=colour, fontsize=11)
    axis.set_xticks(range(len(xs)), [_text(x) for x in xs])
    axis.set_yticks(range(len(ys)), [_text(y) for y in ys])
    axis.set_xlabel(SETTING_LABELS.get(across, across))
    axis.set_ylabel(SETTING_LABELS.get(down, down))
    figure.colorbar(image, ax=axis, label=_loss_label(rows, [down, across]))


def _scatter_3d(figure: Figure, rows: list[dict], settings: list[str]) -> None:
    """Two settings on the horizontal axes (numbers first: batch size and learning rate in the study's
    grid), the loss up, one colour per combination of the others (the architecture)."""
    numeric = {s: all(_is_number(r[s]) for r in rows) for s in settings}
    on_axes = sorted(settings, key=lambda s: not numeric[s])[:2]
    coloured = [s for s in settings if s not in on_axes]
    axis = figure.add_subplot(projection="3d")
    # a log axis for learning rate and weight decay, unless a value is 0 (no decay), which has no log
    logarithmic = {
        s: numeric[s] and s in LOG_SETTINGS and all(float(r[s]) > 0 for r in rows) for s in settings
    }

    def position(setting: str, value) -> float:
        if not numeric[setting]:
            return float(_levels(rows, setting).index(value))
        return math.log10(float(value)) if logarithmic[setting] else float(value)

    for combination in sorted({tuple(r[s] for s in coloured) for r in rows}, key=str):
        mine = [r for r in rows if tuple(r[s] for s in coloured) == combination]
        axis.scatter(
            *([position(s, r[s]) for r in mine] for s in on_axes),
            [r["val_loss_best"] for r in mine],
            label=", ".join(_text(v) for v in combination),
            s=30,
            depthshade=False,
        )
    for setting, set_label, set_ticks in zip(
        on_axes, (axis.set_xlabel, axis.set_ylabel), (axis.set_xticks, axis.set_yticks), strict=True
    ):
        label = SETTING_LABELS.get(setting, setting)
        set_label(f"log10 {label}" if logarithmic[setting] else label)
        if not numeric[setting]:
            levels = _levels(rows, setting)
            set_ticks(range(len(levels)), [_text(level) for level in levels])
    axis.set_zlabel(LOSS)
    axis.legend(loc="upper left", title=", ".join(SETTING_LABELS.get(s, s) for s in coloured))


def curves_figure(epochs: list[dict], best_epoch: int | None, title: str) -> Figure:
    """Training and validation loss and accuracy per epoch, the best epoch marked (Figures 4 and 5)."""
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    drawn = [e["epoch"] for e in epochs if any(k.startswith(("train/", "val/")) for k in e)]  # not the test's
    numbers = drawn + ([best_epoch] if best_epoch is not None else [])
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for stage in ("train", "val"):
            points = [
                (e["epoch"], e[f"{stage}/{metric}"]) for e in epochs if e.get(f"{stage}/{metric}") is not None
            ]
            if points:  # a lone point (one epoch) draws no line: its marker must show
                size = 3 if len(points) > 1 else 7
                axis.plot(*zip(*points, strict=True), marker="o", ms=size, label=stage, zorder=3)
        if best_epoch is not None:
            axis.axvline(best_epoch, color="grey", linestyle="--", label="best", zorder=2)
        if numbers:  # at least an epoch's width: one epoch would get a range of a tenth of one
            first, last = min(numbers), max(numbers)
            margin = max(0.5, 0.05 * (last - first))
            axis.set_xlim(first - margin, last + margin)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axis.set_ylabel(metric)
        axis.legend()
    figure.suptitle(title)
    return figure


def curves(epochs: list[dict], best_epoch: int | None, title: str, path: Path) -> Path:
    return _save(curves_figure(epochs, best_epoch, title), path)


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
