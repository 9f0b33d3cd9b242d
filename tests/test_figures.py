"""The report's figures, drawn from rows and epochs built here (no run trains)."""

import statistics

import numpy as np
import pytest

from brain_mri.report.figures import curves_figure, grid_figure


def grid_rows(losses: dict[tuple, list[float]], settings: tuple[str, ...]) -> list[dict]:
    """Report rows for {(values of settings): [min validation loss of each run]}; the rest held fixed."""
    fixed = {"model": "resnet18", "batch_size": 16, "lr": 1e-3, "weight_decay": 0.0}
    return [
        fixed | dict(zip(settings, values, strict=True)) | {"run": f"{values}/{i}", "val_loss_best": loss}
        for values, runs in losses.items()
        for i, loss in enumerate(runs)
    ]


def test_a_one_epoch_run_draws_its_points_on_an_axis_an_epoch_wide():
    epochs = [
        {"epoch": 0, "train/loss": 0.71, "train/accuracy": 0.5, "val/loss": 0.69, "val/accuracy": 0.55},
        {"epoch": 1, "test/loss": 0.7},  # the test logs the epoch after the last one
    ]
    figure = curves_figure(epochs, best_epoch=0, title="one epoch")
    for axis in figure.axes:
        low, high = axis.get_xlim()
        assert (low, high) == pytest.approx((-0.5, 0.5))  # epoch 0 centred, not a range of 0.09
        assert [t for t in axis.get_xticks() if low <= t <= high] == [0]
        stages = [line for line in axis.get_lines() if line.get_label() in ("train", "val")]
        assert len(stages) == 2
        for line in stages:
            assert list(line.get_xdata()) == [0] and line.get_marker() == "o" and line.get_markersize() >= 6
            assert line.get_zorder() > axis.get_lines()[-1].get_zorder()  # above the best epoch's line


def test_a_long_run_keeps_integer_epoch_ticks():
    epochs = [{"epoch": e, "train/loss": 1 / (e + 1), "val/loss": 1 / (e + 2)} for e in range(30)]
    axis = curves_figure(epochs, best_epoch=12, title="thirty epochs").axes[0]
    low, high = axis.get_xlim()
    assert low < 0 and high > 29 and all(t == int(t) for t in axis.get_xticks())


def test_a_grid_of_two_settings_is_a_heat_map_of_its_losses():
    """Two runs (folds) in one cell make a mean; a pair that did not run stays blank."""
    losses = {(8, 1e-4): [0.5, 0.7], (8, 1e-3): [0.25], (32, 1e-4): [0.9]}
    figure = grid_figure(grid_rows(losses, ("batch_size", "lr")), ["batch_size", "lr"], "2x2")
    axis = figure.axes[0]
    assert axis.name == "rectilinear" and len(axis.images) == 1
    cells = axis.images[0].get_array()
    expected = np.ma.masked_invalid([[0.6, 0.25], [0.9, np.nan]])  # batch size down, lr across
    assert np.ma.allclose(cells, expected) and cells.mask.tolist() == expected.mask.tolist()
    assert sorted(float(t.get_text()) for t in axis.texts) == pytest.approx([0.25, 0.6, 0.9])
    assert [t.get_text() for t in axis.get_yticklabels()] == ["8", "32"]
    assert [t.get_text() for t in axis.get_xticklabels()] == ["0.0001", "0.001"]
    assert "mean" in figure.axes[1].get_ylabel()  # the colour bar says a cell can be a mean


def test_a_grid_of_three_settings_is_a_3d_scatter_coloured_by_the_named_setting():
    settings = ("model", "batch_size", "lr")
    losses = {
        (m, b, lr): [0.1 * i]
        for i, (m, b, lr) in enumerate(
            (m, b, lr) for m in ("resnet18", "vgg11") for b in (8, 16) for lr in (1e-4, 1e-3)
        )
    }
    axis = grid_figure(grid_rows(losses, settings), list(settings), "study").axes[0]
    assert axis.name == "3d"
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("batch size", "log10 learning rate")
    assert [t.get_text() for t in axis.get_legend().get_texts()] == ["resnet18", "vgg11"]


def test_a_grid_of_one_setting_is_a_line_of_its_mean_losses():
    losses = {(1e-4,): [0.4, 0.6], (1e-3,): [0.3], (3e-3,): [0.35]}
    axis = grid_figure(grid_rows(losses, ("lr",)), ["lr"], "lr").axes[0]
    (line,) = axis.get_lines()
    assert list(line.get_xdata()) == pytest.approx([1e-4, 1e-3, 3e-3]) and axis.get_xscale() == "log"
    assert list(line.get_ydata()) == pytest.approx([statistics.fmean([0.4, 0.6]), 0.3, 0.35])
    assert not axis.images and axis.name == "rectilinear"


def test_a_grid_with_no_weight_decay_among_its_values_draws_that_axis_linear():
    """0 (no decay, the study's default) has no logarithm."""
    settings = ("model", "lr", "weight_decay")
    cells = [(m, lr, wd) for m in ("resnet18", "vgg11") for lr in (1e-4, 1e-3) for wd in (0, 1e-4)]
    losses = {cell: [0.1 * i] for i, cell in enumerate(cells)}
    axis = grid_figure(grid_rows(losses, settings), list(settings), "decay").axes[0]
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("log10 learning rate", "weight decay")
