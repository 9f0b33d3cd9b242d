"""The report as one self-contained HTML page (``report/index.html``): tables, figures, a gallery of the
test images of the best run (of each data set) under their Grad-CAM maps, misclassified first, and the
maps each evaluation against boxes drew, with the boxes.
Figures are embedded as data URIs, so the page needs no network and no other file; it can be mailed or
attached to a paper review.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jinja2

from brain_mri.errors import BrainMRIError
from brain_mri.report.tables import format_value
from brain_mri.runs.files import (
    GALLERY_DIR,
    GALLERY_FILE,
    PREDICTIONS_FILE,
    atomic_write_text,
    read_csv,
)

log = logging.getLogger(__name__)

PAGE_FILE = "index.html"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 640px; } .gallery img { width: 192px; } .wide { overflow-x: auto; }
.wrong figcaption { color: #b00; font-weight: bold; } figcaption { font-size: 0.8em; max-width: 192px; }
"""


class BestRun(NamedTuple):
    """A run whose test images the page shows: its name in the report, its folder, and the data set it
    is the best of (None when the report holds one data set)."""

    name: str
    folder: Path
    data: str | None


def readable_name(folder: Path) -> str:
    """The folder as the page names it: its path from the current folder when it lies below it, else its
    name (an absolute path shows the reader nothing but someone's home folder)."""
    folder = folder.resolve()
    try:
        relative = folder.relative_to(Path.cwd().resolve())
    except ValueError:
        return folder.name
    return relative.as_posix() if relative.parts else folder.name


def counted(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def gallery_summary(run_name: str, shown: int, total: int, wrong: int) -> str:
    """What the gallery shows: e.g. "26 test images of run 1, 3 misclassified (shown first)."."""
    images = (
        f"{counted(total, 'test image')} of run {run_name}"
        if shown == total
        else f"{shown} of the {total} test images of run {run_name}"
    )
    return f"{images}, {f'{wrong} misclassified (shown first)' if wrong else 'none misclassified'}."


def png_uri(source: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(source.read_bytes()).decode("ascii")


class Figure(NamedTuple):
    """One image of the page: its data URI, its alternative text and caption, misclassified or not."""

    uri: str
    caption: str
    wrong: bool = False


class Gallery(NamedTuple):
    """Images under their maps on the page (a best run's test images, an evaluation's), or why there are
    none."""

    heading: str
    summary: str = ""
    figures: tuple[Figure, ...] = ()
    missing: str = ""
    maps: str = "Grad-CAM of the predicted class over each slice, as the model saw it."


SHOWN_FIELDS = ("image", "path", "class", "predicted_class")  # the gallery.csv columns the page reads


def gallery_figures(folder: Path, rows: list[dict], caption, needed=SHOWN_FIELDS) -> tuple[Figure, ...]:
    """The images ``gallery.csv`` names, each captioned by ``caption(row)``; never a file outside the
    folder's gallery. A file without the ``needed`` columns, or naming a missing image, is damaged."""
    damaged = folder / GALLERY_FILE
    missing = [column for column in needed if rows and column not in rows[0]]
    if missing:
        raise BrainMRIError(f"{damaged} is damaged: it lacks the column(s) {', '.join(missing)}.")
    figures = []
    for row in rows:
        image = (folder / row["image"]).resolve()
        if not image.is_relative_to((folder / GALLERY_DIR).resolve()):  # a file names it: never elsewhere
            raise BrainMRIError(f"{damaged} is damaged: it names an image outside {GALLERY_DIR}/")
        if not image.is_file():
            raise BrainMRIError(
                f"{damaged} names {row['image']}, which is not there: the gallery is incomplete."
            )
        figures.append(Figure(png_uri(image), caption(row), row["predicted_class"] != row["class"]))
    return tuple(figures)


def gallery(best: BestRun) -> Gallery:
    """The run's test images under their Grad-CAM maps, misclassified first, as the run drew them
    (``gallery.csv``); says so on the page when the run drew none."""
    run, on = best.folder, f" on {best.data}" if best.data else ""
    heading = f"Test images of the best run{on} ({best.name})"
    if not (run / GALLERY_FILE).is_file():
        return no_gallery(
            heading,
            run,
            f"the run drew no Grad-CAM maps of its test images (gallery_images=0, or trained before runs "
            f"drew them); predict.py ckpt_path={run} input=<images> explain=true draws them",
        )
    tested = read_csv(run / PREDICTIONS_FILE)
    wrong = sum(r["predicted_class"] != r["class"] for r in tested)
    rows = read_csv(run / GALLERY_FILE)

    def caption(row: dict) -> str:
        misclassified = row["predicted_class"] != row["class"]
        return f"{row['path']}: true {row['class']}{' (misclassified)' if misclassified else ''}"

    figures = gallery_figures(run, rows, caption)
    return Gallery(heading, gallery_summary(best.name, len(rows), len(tested), wrong), figures)


PEAK_CAPTIONS = {"in box": "peak in the box", "outside box": "peak outside the box", "none": "an empty map"}


def evaluation_gallery(evaluation: dict) -> Gallery | None:
    """The maps an evaluation against boxes drew (``gallery.csv`` with a ``peak`` column), or None."""
    folder = evaluation["folder"]
    if not evaluation["method"] or not (folder / GALLERY_FILE).is_file():
        return None
    rows = read_csv(folder / GALLERY_FILE)

    def caption(row: dict) -> str:
        if row["peak"] not in PEAK_CAPTIONS:
            raise BrainMRIError(f"{folder / GALLERY_FILE} is damaged: its peak column holds '{row['peak']}'.")
        predicted = "" if row["predicted_class"] == row["class"] else f", predicted {row['predicted_class']}"
        return f"{row['path']}: true {row['class']}{predicted}; {PEAK_CAPTIONS[row['peak']]}"

    figures = gallery_figures(folder, rows, caption, (*SHOWN_FIELDS, "peak"))
    wrong = sum(figure.wrong for figure in figures)
    hits, empty = (sum(r["peak"] == value for r in rows) for value in ("in box", "none"))
    summary = (
        f"{len(rows)} of the {evaluation['images with a box']} images with a box of evaluation "
        f"{evaluation['evaluation']} ({wrong} of them misclassified, shown first; then each class in "
        f"turn); the map peaks in the box for {hits} of them"
        + (f", and {empty} map(s) are empty (no evidence for the true class)." if empty else ".")
    )
    maps = (
        f"{evaluation['method']}, of the true class, over each slice as the model saw it; the box in "
        "green, the map's peak as a white cross."
    )
    heading = f"Maps against the boxes: {evaluation['evaluation']}"
    return Gallery(heading, summary, figures, maps=maps)


def no_gallery(heading: str, run: Path, why: str) -> Gallery:
    """Said on the page and in the terminal: the page is still written, without the gallery."""
    log.warning("The report page has no gallery of %s: %s", run, why)
    return Gallery(heading, missing=why)


# The page's template (templates/report.html): every value it inserts is escaped
PAGE = jinja2.Environment(
    loader=jinja2.PackageLoader("brain_mri.report"), autoescape=True, trim_blocks=True, lstrip_blocks=True
).get_template("report.html")


def write_page(
    out: Path, sections: list, galleries: Sequence[Gallery], note: str = "", no_best_run: bool = False
) -> Path:
    """``report/index.html``: the report's tables (``brain_mri.report.tables.Section``, whose level 1 is the
    page's h2), its figures, and ``galleries`` (:func:`gallery` of each best run, :func:`evaluation_gallery`
    of each evaluation that drew maps); ``note`` opens the page; ``no_best_run``: there were runs, and none
    completed. Every name that comes from a folder, a file or a setting is escaped by the template."""
    figures = [Figure(png_uri(f), f.stem) for f in sorted(out.glob("*.png"))]
    page = PAGE.render(
        name=readable_name(out.parent),
        style=STYLE,
        note=note,
        sections=sections,
        cell=format_value,
        figures=figures,
        galleries=list(galleries),
        no_best_run=no_best_run,
    )
    path = out / PAGE_FILE
    atomic_write_text(path, page)
    return path
