"""The report's tables, built once per data set as :class:`Section` lists and rendered from them: as
Markdown (``runs.md``, shown by the notebook), as HTML (the page's template) and on the console. One
cell formatter serves them all."""

from __future__ import annotations

import html
import math
import re
from functools import partial
from typing import NamedTuple

from rich.console import Console
from rich.table import Table


def format_value(value, one_line: bool = False) -> str:
    """A table cell; ``one_line``: a multi-line text (an error message) keeps its first line."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text.splitlines()[0].replace("|", "/") if one_line and text else text


MARKDOWN_SPECIALS = re.compile(r"([\\`\[\]|])")  # what could make a link, code or a table cell


def markdown_text(text: str) -> str:
    """Text from names (runs, folders, classes, files, settings) as Markdown shows it, never as markup:
    ``<``, ``>`` and ``&`` as entities (Markdown renders HTML), brackets, backticks and bars escaped (no
    link, code or table cell can be made from a name), line breaks as spaces (no heading either)."""
    one_line = " ".join(str(text).splitlines())
    return MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(one_line, quote=False))


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(markdown_text(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
    cell = partial(format_value, one_line=True)
    lines += ["| " + " | ".join(markdown_text(cell(r.get(c))) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


class Section(NamedTuple):
    title: str
    text: str  # what the table shows, in a sentence or two (may be empty)
    rows: list[dict]
    columns: list[str]
    level: int = 2  # heading level: 1 opens a data set's part (its runs), 2 the tables that follow


def report_sections(
    label: str, rows: list[dict], columns: list[str], cv: list[dict], repeated: list[dict], best: dict | None
) -> list[Section]:
    """One data set's tables (``label`` names it), in order; rendered as Markdown (runs.md) and HTML
    (index.html)."""
    on = f"on {label}"
    failed = sum(r["status"] == "failed" for r in rows)
    columns = [*columns, "error"] if failed else columns  # why each failed run failed
    title = f"Runs {on} ({len(rows)}; {failed} failed), sorted by minimum validation loss"
    sections = [Section(title, "", rows, columns, level=1)]
    if cv:
        cv_columns = ["model", "batch_size", "lr", "weight_decay", "folds"]
        cv_columns += [
            f"{n} {s}" for n in ("val_loss_best", "test/auroc", "test/accuracy") for s in ("mean", "std")
        ]
        title = f"Cross-validation {on}: mean and standard deviation across folds"
        sections.append(Section(title, "", cv, cv_columns))
    with_oof = [entry for entry in cv if entry["oof"]]
    if with_oof:
        oof_columns = ["model", "batch_size", "lr", "weight_decay", "folds", "oof images", "oof scans"]
        oof_columns += [f"oof auroc {part}" for part in ("estimate", "low", "high")]
        text = (
            "Every non-test image is predicted once, by the fold model that did not train on it (its best "
            "checkpoint); 95 % bootstrap intervals over those images' scans (copies of one scan are one "
            "case)."
        )
        sections.append(Section(f"Cross-validation {on}: out-of-fold metrics", text, with_oof, oof_columns))
    if with_oof:
        best_oof = with_oof[0]
        class_rows = best_oof["oof"]["per_class"]
        title = f"Cross-validation {on}: out-of-fold per class ({best_oof['model']}, lowest validation loss)"
        text = (
            "Sensitivity (recall) of each class, and how its images were predicted (a confusion-matrix row)."
        )
        sections.append(Section(title, text, class_rows, list(class_rows[0])))
    if repeated:
        columns = ["model", "batch_size", "lr", "weight_decay", "seeds"]
        columns += [f"oof {n} {s}" for n in ("auroc", "accuracy") for s in ("mean", "std")]
        title = f"Repeated cross-validation {on}: out-of-fold metrics, mean and spread over seeds"
        sections.append(Section(title, "", repeated, columns))
    if best:
        level = int(100 * best["bootstrap"]["level"])
        text = (
            f"{level} % bootstrap intervals ({best['bootstrap']['resamples']} resamples of the test scans, "
            f"seed {best['bootstrap']['seed']}; copies of one scan are one case). They show how much the "
            "figures could move on another test set of this size from the same population; they do not "
            "cover the variation between training runs (seeds, splits)."
        )
        metrics = [{"metric": n, **v} for n, v in best["metrics"].items()]
        scans = f", {best['test_scans']} scans" if "test_scans" in best else ""
        title = f"Best run {on}: {best['run']} ({best['test_images']} test images{scans})"
        sections.append(Section(title, text, metrics, ["metric", "estimate", "low", "high"]))
    if best and best.get("per_source"):
        per_source = [{"source": name, **values} for name, values in best["per_source"].items()]
        columns = ["source", "images", *(c for c in per_source[0] if c not in ("source", "images"))]
        text = (
            "Each source's test images alone (point estimates): how the model fares per hospital or scanner."
        )
        sections.append(Section(f"Best run {on}: test metrics per source", text, per_source, columns))
    return sections


def render_markdown(sections: list[Section], note: str = "") -> str:
    parts = [f"**Note:** {markdown_text(note)}\n"] if note else []
    for section in sections:
        parts += [f"{chr(10) if parts else ''}{'#' * section.level} {markdown_text(section.title)}\n"]
        parts += [f"{markdown_text(section.text)}\n"] if section.text else []
        parts.append(markdown_table(section.rows, section.columns))
    return "\n".join(parts) + "\n"


SUMMARY_COLUMNS = (
    *("run", "model", "batch_size", "lr", "weight_decay", "fold", "epochs"),
    *("val_loss_best", "test/auroc", "test/accuracy", "status"),
)


def print_summary(report: dict, limit: int = 10) -> None:
    """Per data set: its best runs, its cross-validations and its best run's test AUROC; failed runs."""
    console = Console()
    if not console.is_terminal:
        console.width = 160
    if report["note"]:
        console.print(f"Note: {report['note']}")
    for part in report["data_sets"]:
        shown = [c for c in part["columns"] if c in SUMMARY_COLUMNS or c in part["extra"]]
        table = Table(title=f"Runs on {part['data']}, best first (report in {report['folder']})")
        for column in shown:
            table.add_column(column)
        for row in part["rows"][:limit]:
            table.add_row(*(format_value(row.get(c)) for c in shown))
        console.print(table)
        for entry in [e for e in part["cross_validation"] if e["oof"]][:limit]:
            auroc = entry["oof"]["metrics"]["auroc"]
            console.print(
                f"{entry['model']}, {entry['oof']['folds']}-fold: out-of-fold AUROC {auroc['estimate']:.3f} "
                f"(95 % CI {auroc['low']:.3f}-{auroc['high']:.3f}, {entry['oof']['images']} images, "
                f"{entry['oof']['scans']} scans)"
            )
        if part["best"]:
            auroc = part["best"]["metrics"]["auroc"]
            console.print(
                f"best run on {part['data']}: {part['best']['run']}, test AUROC {auroc['estimate']:.3f} "
                f"(95 % CI {auroc['low']:.3f}-{auroc['high']:.3f})"
            )
    for evaluation in report["evaluations"][:limit]:
        boxes = (
            f"; {evaluation['method']}: pointing game {evaluation['pointing game']}"
            if evaluation["pointing game"]
            else ""
        )
        accuracy, auroc = (format_value(evaluation[f"test/{name}"]) for name in ("accuracy", "auroc"))
        console.print(
            f"evaluation {evaluation['evaluation']}: test accuracy {accuracy}, AUROC {auroc}{boxes}"
        )
    if len(report["evaluations"]) > limit:
        console.print(f"... and {len(report['evaluations']) - limit} more evaluations: see runs.md.")
    for row in [r for r in report["rows"] if r["status"] == "failed"][:limit]:
        console.print(f"failed: {row['run']}: {format_value(row.get('error'), one_line=True)}")
