"""The report as one self-contained HTML page (``report/index.html``): tables, figures and a gallery of
the test images of the best run (of each data set) under their Grad-CAM maps, misclassified first.
Figures are embedded as data URIs, so the page needs no network and no other file; it can be mailed or
attached to a paper review.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import NamedTuple

import jinja2
from PIL import Image

from brain_mri.errors import BrainMRIError
from brain_mri.explain import overlay
from brain_mri.run_outputs import PREDICTIONS_FILE, RUN_INFO_FILE, best_checkpoints, read_csv, read_json

log = logging.getLogger(__name__)

PAGE_FILE = "index.html"
GALLERY_LIMIT = 64  # test images shown; a test partition of the Kaggle set has 26
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


def png_uri(source: Path | Image.Image) -> str:
    if isinstance(source, Image.Image):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        data = source.read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def cell(value) -> str:
    """A table cell's text: floats to 4 significant digits, nothing for a missing value."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


class Figure(NamedTuple):
    """One image of the page: its data URI, its alternative text and caption, misclassified or not."""

    uri: str
    caption: str
    wrong: bool = False


class Gallery(NamedTuple):
    """The test images of a best run on the page, or why there are none."""

    heading: str
    summary: str = ""
    figures: tuple[Figure, ...] = ()
    missing: str = ""


def gallery(best: BestRun) -> Gallery:
    """The run's test images with prediction, truth and Grad-CAM; misclassified first. Needs the data
    set where the run read it and the run's best checkpoint; says so on the page when either is gone."""
    from brain_mri.models import BrainMRIClassifier
    from brain_mri.predict import predict_files

    run, on = best.folder, f" on {best.data}" if best.data else ""
    heading = f"Test images of the best run{on} ({best.name})"
    rows = read_csv(run / PREDICTIONS_FILE)
    root = Path(read_json(run / RUN_INFO_FILE)["data_root"])
    missing = [r["path"] for r in rows if not (root / r["path"]).is_file()]
    try:
        if missing:
            raise BrainMRIError(
                f"{len(missing)} of the {len(rows)} test images are not under {root}, where the run read "
                f"them (e.g. {missing[0]})"
            )
        (checkpoint,) = best_checkpoints(run)  # beside the run when it was moved
    except BrainMRIError as err:
        return no_gallery(heading, run, str(err))
    wrong = sum(r["predicted_class"] != r["class"] for r in rows)
    total = len(rows)
    rows.sort(key=lambda r: (r["predicted_class"] == r["class"], r["path"]))
    rows = rows[:GALLERY_LIMIT]
    model = BrainMRIClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
    try:
        files = [root / r["path"] for r in rows]  # the run read them all: no size limit of its own here
        found = predict_files(model, files, progress=False, explain=True, min_image_size=1)
        figures = []
        for row, prediction in zip(rows, found, strict=True):
            misclassified = row["predicted_class"] != row["class"]
            caption = f"{row['predicted_class']} {prediction.probabilities.max():.2f}"
            assert prediction.heat_map is not None  # explain=True
            picture = overlay(prediction.pixels, prediction.heat_map, caption)
            label = f"{row['path']}: true {row['class']}{' (misclassified)' if misclassified else ''}"
            figures.append(Figure(png_uri(picture), label, misclassified))
    except BrainMRIError as err:  # e.g. a checkpoint saved before Grad-CAM layers were recorded
        return no_gallery(heading, run, str(err))
    summary = gallery_summary(best.name, len(rows), total, wrong)
    return Gallery(heading, summary, tuple(figures))


def no_gallery(heading: str, run: Path, why: str) -> Gallery:
    """Said on the page and in the terminal: the page is still written, without the gallery."""
    log.warning("The report page has no gallery of %s: %s", run, why)
    return Gallery(heading, missing=why)


# The page's template (templates/report.html): every value it inserts is escaped
PAGE = jinja2.Environment(
    loader=jinja2.PackageLoader("brain_mri"), autoescape=True, trim_blocks=True, lstrip_blocks=True
).get_template("report.html")


def write_page(out: Path, sections: list, best_runs: list[BestRun], note: str = "") -> Path:
    """``report/index.html``: the report's tables (``brain_mri.report.Section``, whose level 1 is the
    page's h2), its figures, and the gallery of each of ``best_runs``; ``note`` opens the page. Every
    name that comes from a folder, a file or a setting is escaped by the template."""
    figures = [Figure(png_uri(f), f.stem) for f in sorted(out.glob("*.png"))]
    page = PAGE.render(
        name=readable_name(out.parent),
        style=STYLE,
        note=note,
        sections=sections,
        cell=cell,
        figures=figures,
        galleries=[gallery(best) for best in best_runs],
    )
    path = out / PAGE_FILE
    path.write_text(page, encoding="utf-8")
    return path
