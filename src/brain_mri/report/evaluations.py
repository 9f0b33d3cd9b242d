"""Evaluations in the report: the folders ``eval.py`` wrote (its ``metrics.json``), their test metrics
and, when they were measured against boxes (``eval.boxes``), where the maps point and what hiding the box
does; the page shows the maps they drew with the boxes (``gallery/``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from brain_mri.errors import BrainMRIError
from brain_mri.report.tables import Section
from brain_mri.runs.files import CONFIG_FILE, METRICS_FILE, files_named, natural_order, read_config, read_json

EVALUATION_TASK = "eval"  # conf/eval.yaml's task_name, in the folder's .hydra/config.yaml


def is_evaluation(folder: Path) -> bool:
    """A folder eval.py wrote: its metrics name the models it tested, or (it failed) Hydra's record names
    the eval task."""
    if not (folder / METRICS_FILE).is_file():
        return False
    record = folder / ".hydra" / CONFIG_FILE
    if (
        record.is_file()
        and OmegaConf.select(read_config(record), "task_name", default=None) == EVALUATION_TASK
    ):
        return True
    return "members" in read_json(folder / METRICS_FILE)


def find_evaluations(folder: Path) -> list[Path]:
    """Every evaluation folder at or below ``folder``, in natural order."""
    found = {path.parent for path in files_named(folder, METRICS_FILE) if is_evaluation(path.parent)}
    return sorted(found, key=natural_order)


def with_interval(figure: dict | None) -> str | None:
    """{"estimate": .48, "low": .41, "high": .54} as "0.476 (0.410-0.536)"."""
    if not figure:
        return None
    return f"{figure['estimate']:.3f} ({figure['low']:.3f}-{figure['high']:.3f})"


def box_summary(found: dict) -> str:
    """One line on an evaluation's box figures (its ``localisation`` and ``occlusion``), for the log."""
    pointing = found["localisation"]
    line = (
        f"{pointing['method']}: pointing game {with_interval(pointing['pointing_game'])} (the centre "
        f"{pointing['centre_pointing_game']['estimate']:.3f}, random weights "
        f"{pointing['random_weights_pointing_game']['estimate']:.3f}), mass in the box "
        f"{with_interval(pointing['mass_in_box'])} (a flat map "
        f"{pointing['flat_mass_in_box']['estimate']:.3f})"
    )
    if "occlusion" in found:
        hiding = found["occlusion"]
        line += (
            f"; hiding the box lowers the true class's probability by "
            f"{with_interval(hiding['drop_when_box_hidden'])}, the control box by "
            f"{with_interval(hiding['drop_when_control_hidden'])}"
        )
    return line


def read_evaluation(folder: Path, root: Path) -> dict:
    """One evaluation's row: what it tested, its test metrics, and its box figures where it has them."""
    metrics = read_json(folder / METRICS_FILE)
    try:
        return evaluation_row(metrics, folder, root)
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # valid JSON, not what eval.py writes
        raise BrainMRIError(
            f"{folder / METRICS_FILE} is damaged: not what eval.py writes ({type(err).__name__}: {err})."
        ) from None


def evaluation_row(metrics: dict, folder: Path, root: Path) -> dict:
    """The row of ``metrics`` (an evaluation's metrics.json); figures it lacks are empty cells."""
    pointing = metrics.get("localisation") or {}
    hiding = metrics.get("occlusion") or {}
    return {
        "evaluation": folder.relative_to(root).as_posix() if folder != root else folder.name,
        "folder": folder,
        "checkpoint": metrics.get("checkpoint"),
        "models": len(metrics.get("members") or []),
        "tta": metrics.get("tta"),
        "images": metrics.get("images_evaluated"),
        "status": metrics.get("status"),
        "test/accuracy": metrics.get("test/accuracy"),
        "test/auroc": metrics.get("test/auroc"),
        "method": pointing.get("method"),
        "images with a box": pointing.get("images"),
        "tolerance (px)": pointing.get("tolerance_px"),
        "pointing game": with_interval(pointing.get("pointing_game")),
        "centre point": with_interval(pointing.get("centre_pointing_game")),
        "random weights": with_interval(pointing.get("random_weights_pointing_game")),
        "mass in box": with_interval(pointing.get("mass_in_box")),
        "flat map": with_interval(pointing.get("flat_mass_in_box")),
        "true-class probability": hiding.get("true_class_probability"),
        "drop, box hidden": with_interval(hiding.get("drop_when_box_hidden")),
        "drop, control hidden": with_interval(hiding.get("drop_when_control_hidden")),
        "box minus control": with_interval(hiding.get("box_minus_control")),
    }


def evaluation_sections(rows: list[dict]) -> list[Section]:
    """The evaluations' tables: test metrics; the maps against the boxes; hiding the boxes."""
    if not rows:
        return []
    columns = ["evaluation", "checkpoint", "models", "tta", "images", "status", "test/accuracy", "test/auroc"]
    sections = [Section(f"Evaluations ({len(rows)})", "", rows, columns, level=1)]
    boxed = [row for row in rows if row["pointing game"]]
    if boxed:
        text = (
            "The true class's maps of the evaluated images against their boxes: the pointing game (share of "
            "images whose map peaks in the box, give or take the tolerance) and the share of the map's mass "
            "in the box, beside what knows nothing of the image (the image's centre as the peak; a flat "
            "map) and the pointing game of the same method on the network with random weights (what the "
            "image alone draws). Means with 95 % intervals that resample scans (copies of one scan are one "
            "case)."
        )
        columns = ["evaluation", "method", "images with a box", "tolerance (px)", "pointing game"]
        columns += ["centre point", "random weights", "mass in box", "flat map"]
        sections.append(Section("Where the maps point", text, boxed, columns))
    hidden = [row for row in rows if row["drop, box hidden"]]
    if hidden:
        text = (
            "How much the true class's probability falls when the box is filled with the slice's background, "
            "against an equal box mirrored elsewhere on the head: a model that uses what is in the box loses "
            "more when the box is hidden than when the control is. Means with 95 % intervals by scan."
        )
        columns = ["evaluation", "images with a box", "true-class probability", "drop, box hidden"]
        columns += ["drop, control hidden", "box minus control"]
        sections.append(Section("Hiding the box", text, hidden, columns))
    return sections
