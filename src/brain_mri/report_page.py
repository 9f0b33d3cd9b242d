"""The report as one self-contained HTML page (``report/index.html``): tables, figures and a gallery of
the test images of the best run (of each data set) under their Grad-CAM maps, misclassified first.
Figures are embedded as data URIs, so the page needs no network and no other file; it can be mailed or
attached to a paper review.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path
from typing import NamedTuple

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


def table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return html.escape("" if value is None else str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def gallery(run: Path, run_name: str) -> str:
    """The run's test images with prediction, truth and Grad-CAM; misclassified first. Needs the data
    set where the run read it and the run's best checkpoint; says so on the page when either is gone."""
    from brain_mri.models import BrainMRIClassifier
    from brain_mri.predict import predict_files

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
        return no_gallery(run, str(err))
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
            wrong = row["predicted_class"] != row["class"]
            caption = f"{row['predicted_class']} {prediction.probabilities.max():.2f}"
            assert prediction.heat_map is not None  # explain=True
            picture = overlay(prediction.pixels, prediction.heat_map, caption)
            figures.append(
                f'<figure class="{"wrong" if wrong else "right"}"><img src="{png_uri(picture)}" '
                f'alt="{html.escape(row["path"])}"><figcaption>{html.escape(row["path"])}: true '
                f"{html.escape(row['class'])}{' (misclassified)' if wrong else ''}</figcaption></figure>"
            )
    except BrainMRIError as err:  # e.g. a checkpoint saved before Grad-CAM layers were recorded
        return no_gallery(run, str(err))
    return (
        f"<p>{html.escape(gallery_summary(run_name, len(rows), total, wrong))} "
        "Grad-CAM of the predicted class over each slice, as the model saw it.</p>"
        f'<div class="gallery">{"".join(figures)}</div>'
    )


def no_gallery(run: Path, why: str) -> str:
    """Said on the page and in the terminal: the page is still written, without the gallery."""
    log.warning("The report page has no gallery of %s: %s", run, why)
    return f"<p>No gallery: {html.escape(why)}.</p>"


def write_page(out: Path, sections: list, best_runs: list[BestRun], note: str = "") -> Path:
    """``report/index.html``: the report's tables (``brain_mri.report.Section``, whose level 1 is the
    page's h2), its figures, and the gallery of each of ``best_runs``; ``note`` opens the page."""
    name = html.escape(readable_name(out.parent))
    parts = [f"<h1>Report: {name}</h1>"]
    parts += [f"<p><strong>{html.escape(note)}</strong></p>"] if note else []
    for section in sections:
        level = section.level + 1
        parts.append(f"<h{level}>{html.escape(section.title)}</h{level}>")
        parts += [f"<p>{html.escape(section.text)}</p>"] if section.text else []
        parts.append(f'<div class="wide">{table(section.rows, section.columns)}</div>')
    figures = sorted(out.glob("*.png"))
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [
            f'<figure><img src="{png_uri(f)}" alt="{f.stem}"><figcaption>{f.stem}</figcaption></figure>'
            for f in figures
        ]
    for best in best_runs:
        on = f" on {best.data}" if best.data else ""
        parts += [
            f"<h2>Test images of the best run{html.escape(on)} ({html.escape(best.name)})</h2>",
            gallery(best.folder, best.name),
        ]
    if not best_runs:
        parts.append("<p>No run completed, so there is no best run: the runs table says why each failed.</p>")
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>brain-mri report: {name}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
    path = out / PAGE_FILE
    path.write_text(page, encoding="utf-8")
    return path
