"""Report on a sweep or a run: ``python -m brain_mri.report <folder>``.

Reads only what runs wrote (``config.yaml``, ``.hydra/overrides.yaml``, ``metrics.json``,
``csv/metrics.csv``, ``predictions.csv``, ``split.csv``), so it works on a sweep that is still running or
partly failed. Writes ``<folder>/report/``: runs.csv, runs.md, best.json, grid_3d.png (the minimum
validation loss over the swept settings), for the best run curves_/roc_/confusion_<run>.png, and all of it
as one page, index.html.
"""

from __future__ import annotations

import argparse
import math
import statistics
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from brain_mri import plots
from brain_mri.bootstrap import METRIC_NAMES, bootstrap_intervals, paired_difference
from brain_mri.errors import BrainMRIError, stop
from brain_mri.report_page import write_page
from brain_mri.run_outputs import (
    CONFIG_FILE,
    EPOCH_LOG,
    METRICS_FILE,
    PREDICTIONS_FILE,
    SPLIT_FILE,
    VAL_PREDICTIONS_FILE,
    atomic_write_text,
    config_as_resumed,
    files_named,
    is_inside,
    natural_order,
    read_config,
    read_epochs,
    read_json,
    read_predictions,
    read_split,
    resume_changes,
    run_overrides,
    write_csv,
    write_json,
)

SETTINGS = {
    "model": "model.arch",
    "batch_size": "data.batch_size",
    "lr": "model.lr",
    "weight_decay": "model.weight_decay",
    "fold": "data.fold",
}
TEST_COLUMNS = [f"test/{name}" for name in METRIC_NAMES] + ["test/loss"]
NOT_SETTINGS = ("hydra.", "paths.", "data.root", "data.cache_dir", "data.split_file", "data.output_dir")


def find_runs(folder: Path) -> list[Path]:
    """Every run folder at or below ``folder``, in natural order: a folder in which a run wrote its
    resolved config, or (a sweep job that failed at start) Hydra's record and the failed status."""
    configs = files_named(folder, CONFIG_FILE)  # linked run folders too
    written = {p.parent for p in configs if p.parent.name != ".hydra"}
    failed = {p.parent.parent for p in configs if p.parent.name == ".hydra"}
    runs = written | {run for run in failed if (run / METRICS_FILE).is_file()}

    return sorted(runs, key=natural_order)


def read_overrides(run: Path) -> dict[str, str]:
    """The command line's overrides of a run, as its resumes last changed them."""
    items = [*run_overrides(run), *resume_changes(run)]
    return dict(item.lstrip("+~").split("=", 1) for item in items if "=" in item)


def read_run(run: Path, root: Path) -> dict:
    """One row of the report: settings, epochs, validation loss, test metrics and status."""
    # the resolved config; for a job that failed before writing it, Hydra's composed one
    config = read_config(run / CONFIG_FILE if (run / CONFIG_FILE).is_file() else run / ".hydra" / CONFIG_FILE)
    metrics = read_json(run / METRICS_FILE) if (run / METRICS_FILE).is_file() else {}
    epochs = read_epochs(run / EPOCH_LOG)
    validated = [e for e in epochs if "val/loss" in e]
    best = min(validated, key=lambda e: e["val/loss"]) if validated else None
    status = metrics.get("status") or ("completed" if "test/loss" in metrics else "incomplete")
    row = {
        "run": run.relative_to(root).as_posix() if run != root else run.name,
        "folder": run,
        "config": config,
    }
    select = partial(OmegaConf.select, config, throw_on_resolution_failure=False)
    row |= {name: select(key) for name, key in SETTINGS.items()}
    row["num_folds"] = OmegaConf.select(config, "data.num_folds", default=0)
    if not row["num_folds"]:
        row["fold"] = None
    row |= {  # an unfinished run's from its log, counted from epoch 0 as metrics.json counts them
        "epochs": metrics.get("epochs_trained", epochs[-1]["epoch"] + 1 if epochs else 0),
        "best_epoch": metrics.get("best_epoch", best["epoch"] if best else None),
        "val_loss_best": metrics.get("val/loss_best") or (best["val/loss"] if best else math.nan),
    }
    row |= {name: metrics.get(name) for name in TEST_COLUMNS}
    row |= {"status": status, "error": metrics.get("error"), "overrides": read_overrides(run)}
    return row


def add_swept_columns(rows: list[dict]) -> list[str]:
    """Overridden keys that vary across runs and are not already a column (e.g. ``seed``), each set in
    every row: the run's command line value, or its config's (a default) where the command line set none."""
    covered = set(SETTINGS.values()) | {"model"}
    keys = sorted({k for r in rows for k in r["overrides"]} - covered)
    keys = [k for k in keys if not k.startswith(NOT_SETTINGS)]
    swept = [k for k in keys if len({r["overrides"].get(k) for r in rows}) > 1]
    for row in rows:
        for key in swept:
            default = OmegaConf.select(row["config"], key, default=None)
            row[key] = row["overrides"].get(key, None if default is None else str(default))
    return swept


def grid_settings(rows: list[dict], extra: list[str]) -> list[str]:
    """The settings that vary among these runs (folds of one configuration do not)."""
    candidates = ["model", "batch_size", "lr", "weight_decay", *(k for k in extra if k != "data.fold")]
    return [k for k in candidates if len({r[k] for r in rows}) > 1]


def sort_key(row: dict):
    loss = row["val_loss_best"]
    return (row["status"] != "completed", math.isnan(loss) if loss is not None else True, loss or 0.0)


def out_of_fold(folds: list[dict], resamples: int, seed: int) -> dict | None:
    """Metrics of the validation predictions of every fold together (each non-test image predicted once,
    by the model that did not train on it), with bootstrap intervals over those images; None until every
    fold of the configuration has finished and written ``val_predictions.csv``."""
    expected = folds[0]["num_folds"]
    files = [row["folder"] / VAL_PREDICTIONS_FILE for row in folds]
    if sorted(row["fold"] for row in folds) != list(range(expected)) or not all(f.is_file() for f in files):
        return None
    parts = [read_predictions(f) for f in files]
    # each image as its path and content (sha256 in the run's split.csv), so that a comparison pairs the same
    # image, not another file that took its name
    images = []
    for row, part in zip(folds, parts, strict=True):
        content = {r["path"]: r["sha256"] for r in read_split(row["folder"] / SPLIT_FILE)}
        images += [(path, content[path]) for path in part.paths]
    classes = parts[0].class_names
    labels = np.concatenate([part.labels for part in parts])
    probabilities = np.concatenate([part.probabilities for part in parts])
    positive = positive_label(classes, read_json(folds[0]["folder"] / METRICS_FILE).get("positive_class"))
    return {
        "folds": expected,
        "images": len(labels),
        "classes": classes,
        "positive": positive,
        "predicted_images": images,
        "labels": labels,
        "probabilities": probabilities,
        "metrics": bootstrap_intervals(labels, probabilities, positive, resamples=resamples, seed=seed),
    }


def cross_validation_summary(
    rows: list[dict], extra: list[str], resamples: int = 2000, seed: int = 0
) -> list[dict]:
    """Per configuration with at least one finished fold: mean and standard deviation across folds, and
    once every fold has finished, the out-of-fold metrics with bootstrap intervals."""
    extra_keys = [k for k in extra if k != "data.fold"]
    configs: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["fold"] is not None and row["status"] == "completed":
            key = (row["model"], row["batch_size"], row["lr"], row["weight_decay"])
            key += tuple(row[k] for k in extra_keys)
            configs.setdefault(key, []).append(row)
    summary = []
    for key, members in configs.items():
        entry = dict(zip(("model", "batch_size", "lr", "weight_decay"), key[:4], strict=True))
        entry["swept"] = dict(zip(extra_keys, key[4:], strict=True))
        entry |= entry["swept"]
        entry["folds"] = len(members)
        entry["runs"] = [m["folder"] for m in members]
        for name in ["val_loss_best", *TEST_COLUMNS]:
            values = [m[name] for m in members if m[name] is not None]
            entry[f"{name} mean"] = statistics.fmean(values) if values else None
            entry[f"{name} std"] = statistics.stdev(values) if len(values) > 1 else None
        entry["oof"] = out_of_fold(members, resamples, seed)
        if entry["oof"]:
            for part in ("estimate", "low", "high"):
                entry[f"oof auroc {part}"] = entry["oof"]["metrics"]["auroc"][part]
            entry["oof images"] = entry["oof"]["images"]
        summary.append(entry)
    return sorted(summary, key=lambda e: e["val_loss_best mean"])


def format_value(value, one_line: bool = False) -> str:
    """A table cell; ``one_line``: a multi-line text (an error message) keeps its first line."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text.splitlines()[0].replace("|", "/") if one_line and text else text


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    cell = partial(format_value, one_line=True)
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


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


def best_run_figures(row: dict, out: Path, resamples: int, seed: int) -> dict:
    """Curves, ROC and confusion matrix of the best run, and bootstrap intervals of its test metrics."""
    run = row["folder"]
    name = row["run"].replace("/", "_")
    plots.curves(
        read_epochs(run / EPOCH_LOG),
        row["best_epoch"],
        f"best run: {row['run']}",
        out / f"curves_{name}.png",
    )
    classes, _, labels, probabilities, predicted = read_predictions(run / PREDICTIONS_FILE)
    positive = positive_label(classes, read_json(run / METRICS_FILE).get("positive_class"))
    intervals = bootstrap_intervals(labels, probabilities, positive, resamples=resamples, seed=seed)
    auroc = intervals["auroc"]["estimate"]
    plots.roc(labels, probabilities, classes, positive, auroc, f"ROC, {row['run']}", out / f"roc_{name}.png")
    plots.confusion(labels, predicted, classes, f"test, {row['run']}", out / f"confusion_{name}.png")
    return {
        "run": row["run"],
        "classes": classes,
        "positive_class": None if positive is None else classes[positive],
        "averaging": "binary, positive class" if positive is not None else "macro over classes (one-vs-rest)",
        "settings": {k: row[k] for k in SETTINGS},
        "val/loss_best": row["val_loss_best"],
        "test_images": len(labels),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95, "unit": "test image"},
        "metrics": intervals,
    }


def build_report(folder: Path, resamples: int = 2000, seed: int = 0) -> dict:
    """Write every report file; returns the rows, the cross-validation summary and the best run."""
    folder = folder.resolve()
    if not folder.is_dir():
        raise BrainMRIError(f"{folder} is not a folder: give a sweep or run folder.")
    runs = find_runs(folder)
    if not runs:
        raise BrainMRIError(f"No runs under {folder} (a run folder holds {CONFIG_FILE}).")
    rows = sorted((read_run(run, folder) for run in runs), key=sort_key)
    extra = add_swept_columns(rows)
    out = folder / "report"
    out.mkdir(exist_ok=True)
    columns = ["run", *SETTINGS, *extra, "epochs", "best_epoch", "val_loss_best", *TEST_COLUMNS, "status"]
    write_csv(out / "runs.csv", rows, (*columns, "error"))
    if all(r["fold"] is None for r in rows):
        columns.remove("fold")
    cv = cross_validation_summary(rows, extra, resamples, seed)
    repeated = repeated_cross_validation(cv)
    finished = [r for r in rows if r["status"] == "completed"]
    best = None
    if finished:
        plots.grid(finished, grid_settings(finished, extra), plots.LOSS, out / "grid_3d.png")
        best = best_run_figures(finished[0], out, resamples, seed)
        oof = cv[0]["oof"] if cv and cv[0]["oof"] else None
        write_json(
            out / "best.json",
            {k: v for k, v in best.items() if k != "metrics"}
            | flat_metrics(best["metrics"])
            | ({"out_of_fold": out_of_fold_record(cv[0])} if oof else {}),
        )
    sections = report_sections(rows, columns, cv, repeated, best)
    atomic_write_text(out / "runs.md", render_markdown(sections))
    write_page(out, sections, (finished[0]["run"], finished[0]["folder"]) if finished else None)
    return {
        "rows": rows,
        "columns": columns,
        "cross_validation": cv,
        "repeated": repeated,
        "best": best,
        "folder": out,
    }


def flat_metrics(metrics: dict, prefix: str = "") -> dict:
    """{"auroc": {"estimate": .9, ...}} -> {"auroc/estimate": .9, ...}"""
    return {f"{prefix}{name}/{part}": v for name, parts in metrics.items() for part, v in parts.items()}


def out_of_fold_record(entry: dict) -> dict:
    """What best.json says of the best configuration's out-of-fold predictions."""
    oof = entry["oof"]
    return {
        "label": "out-of-fold",
        "configuration": {k: entry[k] for k in ("model", "batch_size", "lr", "weight_decay")},
        "folds": oof["folds"],
        "images": oof["images"],
        "bootstrap": {"unit": "non-test image, predicted by the fold model that did not train on it"},
        **flat_metrics(oof["metrics"]),
    }


def repeated_cross_validation(cv: list[dict]) -> list[dict]:
    """Configurations cross-validated with several seeds: mean and spread of the out-of-fold metrics."""
    groups: dict[tuple, list[dict]] = {}
    for entry in cv:
        if entry["oof"] and entry["swept"].get("seed") is not None:
            others = tuple((k, v) for k, v in entry["swept"].items() if k != "seed")
            key = tuple((k, entry[k]) for k in ("model", "batch_size", "lr", "weight_decay")) + others
            groups.setdefault(key, []).append(entry)
    summary = []
    for key, entries in groups.items():
        values = {n: [e["oof"]["metrics"][n]["estimate"] for e in entries] for n in ("auroc", "accuracy")}
        summary.append(
            dict(key)
            | {"seeds": len(entries)}
            | {f"oof {n} mean": statistics.fmean(v) for n, v in values.items()}
            | {f"oof {n} std": statistics.stdev(v) if len(v) > 1 else None for n, v in values.items()}
        )
    return summary


def best_cross_validation(folder: Path, seed: int) -> dict:
    """The finished cross-validation with the lowest mean validation loss in a sweep folder."""
    if not folder.is_dir():
        raise BrainMRIError(f"No such folder: {folder}.")
    rows = [read_run(run, folder.resolve()) for run in find_runs(folder.resolve())]
    finished = [
        e for e in cross_validation_summary(rows, add_swept_columns(rows), resamples=1, seed=seed) if e["oof"]
    ]
    if not finished:
        raise BrainMRIError(f"{folder} holds no finished cross-validation (all folds, val_predictions.csv).")
    entry = finished[0]
    entry["name"] = ", ".join(
        f"{k}={entry[k]}" for k in ("model", "batch_size", "lr", "weight_decay", *entry["swept"])
    )
    entry["alternatives"] = len(finished) - 1
    return entry


def recorded_settings(run: Path) -> dict[str, Any]:
    """A run's resolved settings as dotted keys, with the changes its resumes made (``run_info.json``;
    ``config.yaml`` stays as the run started), without the paths that are its own (output folders)."""
    config = config_as_resumed(run)
    own = str(OmegaConf.select(config, "paths.output_dir", default=run))
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        elif not is_inside(node, own):
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(config), "")
    return {k: v for k, v in flat.items() if not k.startswith(NOT_SETTINGS) and k != "data.fold"}


def differing_settings(first: Path, second: Path) -> dict[str, list]:
    """The settings two runs were not trained with alike, as [first, second] (None where one lacks it):
    what a comparison compares besides model, batch size and learning rate (recipe, crop, epochs...)."""
    a, b = recorded_settings(first), recorded_settings(second)
    return {k: [a.get(k), b.get(k)] for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def compare(first: Path, second: Path, resamples: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap of the out-of-fold AUROC difference between the best cross-validated
    configuration of two sweep folders, on the images both predicted."""
    if first.resolve() == second.resolve():
        raise BrainMRIError("--compare needs another sweep folder than the one reported on.")
    entries = [best_cross_validation(folder, seed) for folder in (first, second)]
    a, b = (entry["oof"] for entry in entries)
    if a["classes"] != b["classes"]:
        raise BrainMRIError(f"The two sweeps have other classes: {a['classes']} and {b['classes']}.")
    index_b = {image: i for i, image in enumerate(b["predicted_images"])}
    shared = [(i, index_b[image]) for i, image in enumerate(a["predicted_images"]) if image in index_b]
    if not shared:
        raise BrainMRIError(
            "The two sweeps predicted no image in common (same path and content): were they made on the "
            "same data?"
        )
    rows_a, rows_b = (np.array(side) for side in zip(*shared, strict=True))
    if not np.array_equal(a["labels"][rows_a], b["labels"][rows_b]):
        raise BrainMRIError("The two sweeps label the same images differently.")
    result = paired_difference(
        a["labels"][rows_a],
        a["probabilities"][rows_a],
        b["probabilities"][rows_b],
        a["positive"],
        resamples=resamples,
        seed=seed,
    )
    notes = [
        f"{folder} holds {entry['alternatives'] + 1} finished cross-validations; compared: the one with the "
        f"lowest mean validation loss ({entry['name']})"
        for folder, entry in zip((first, second), entries, strict=True)
        if entry["alternatives"]
    ]
    if len(shared) < max(a["images"], b["images"]):
        notes.append(
            f"compared on the {len(shared)} images both predicted out-of-fold ({a['images']} and "
            f"{b['images']}, paired by path and content): the sweeps were split differently "
            "(data.split_seed, fractions) or made on other data"
        )
    return {
        "first": str(first),
        "first_configuration": entries[0]["name"],
        "second": str(second),
        "second_configuration": entries[1]["name"],
        "settings_that_differ": differing_settings(entries[0]["runs"][0], entries[1]["runs"][0]),
        "metric": "out-of-fold AUROC, first minus second",
        "notes": notes,
    } | result


class Section(NamedTuple):
    title: str
    text: str  # what the table shows, in a sentence or two (may be empty)
    rows: list[dict]
    columns: list[str]


def report_sections(
    rows: list[dict], columns: list[str], cv: list[dict], repeated: list[dict], best: dict | None
) -> list[Section]:
    """The report's tables, in order; rendered as Markdown (runs.md) and HTML (index.html)."""
    failed = sum(r["status"] == "failed" for r in rows)
    columns = [*columns, "error"] if failed else columns  # why each failed run failed
    sections = [
        Section(f"Runs ({len(rows)}; {failed} failed), sorted by minimum validation loss", "", rows, columns)
    ]
    if cv:
        cv_columns = ["model", "batch_size", "lr", "weight_decay", "folds"]
        cv_columns += [
            f"{n} {s}" for n in ("val_loss_best", "test/auroc", "test/accuracy") for s in ("mean", "std")
        ]
        sections.append(
            Section("Cross-validation: mean and standard deviation across folds", "", cv, cv_columns)
        )
    with_oof = [entry for entry in cv if entry["oof"]]
    if with_oof:
        oof_columns = ["model", "batch_size", "lr", "weight_decay", "folds", "oof images"]
        oof_columns += [f"oof auroc {part}" for part in ("estimate", "low", "high")]
        text = (
            "Every non-test image is predicted once, by the fold model that did not train on it (its best "
            "checkpoint); 95 % bootstrap intervals over those images."
        )
        sections.append(Section("Cross-validation: out-of-fold metrics", text, with_oof, oof_columns))
    if repeated:
        columns = ["model", "batch_size", "lr", "weight_decay", "seeds"]
        columns += [f"oof {n} {s}" for n in ("auroc", "accuracy") for s in ("mean", "std")]
        title = "Repeated cross-validation: out-of-fold metrics, mean and spread over seeds"
        sections.append(Section(title, "", repeated, columns))
    if best:
        level = int(100 * best["bootstrap"]["level"])
        text = (
            f"{level} % bootstrap intervals ({best['bootstrap']['resamples']} resamples of the test images, "
            f"seed {best['bootstrap']['seed']}). They show how much the figures could move on another test "
            "set of this size from the same population; they do not cover the variation between training "
            "runs (seeds, splits)."
        )
        metrics = [{"metric": n, **v} for n, v in best["metrics"].items()]
        title = f"Best run: {best['run']} ({best['test_images']} test images)"
        sections.append(Section(title, text, metrics, ["metric", "estimate", "low", "high"]))
    return sections


def render_markdown(sections: list[Section]) -> str:
    parts = []
    for level, section in enumerate(sections):
        parts += [f"{'#' if level == 0 else chr(10) + '##'} {section.title}\n"]
        parts += [f"{section.text}\n"] if section.text else []
        parts.append(markdown_table(section.rows, section.columns))
    return "\n".join(parts) + "\n"


def print_summary(report: dict, limit: int = 10) -> None:
    table = Table(title=f"Runs, best first (report in {report['folder']})")
    shown = [
        c
        for c in report["columns"]
        if c
        in (
            "run",
            "model",
            "batch_size",
            "lr",
            "fold",
            "epochs",
            "val_loss_best",
            "test/auroc",
            "test/accuracy",
            "status",
        )
    ]
    for column in shown:
        table.add_column(column)
    for row in report["rows"][:limit]:
        table.add_row(*(format_value(row.get(c)) for c in shown))
    console = Console()
    if not console.is_terminal:
        console.width = 160
    console.print(table)
    for entry in [e for e in report["cross_validation"] if e["oof"]][:limit]:
        auroc = entry["oof"]["metrics"]["auroc"]
        console.print(
            f"{entry['model']}, {entry['oof']['folds']}-fold: out-of-fold AUROC {auroc['estimate']:.3f} "
            f"(95 % CI {auroc['low']:.3f}-{auroc['high']:.3f}, {entry['oof']['images']} images)"
        )
    if report["best"]:
        auroc = report["best"]["metrics"]["auroc"]
        console.print(
            f"best run {report['best']['run']}: test AUROC {auroc['estimate']:.3f} "
            f"(95 % CI {auroc['low']:.3f}-{auroc['high']:.3f})"
        )
    for row in [r for r in report["rows"] if r["status"] == "failed"][:limit]:
        console.print(f"failed: {row['run']}: {format_value(row.get('error'), one_line=True)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m brain_mri.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a sweep folder (outputs/multiruns/...) or one run folder")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="FOLDER",
        help="another cross-validation sweep: paired bootstrap of the out-of-fold AUROC difference",
    )
    args = parser.parse_args(argv)
    try:
        if args.compare and not args.compare.is_dir():  # before the report of the first folder is rewritten
            raise BrainMRIError(f"--compare {args.compare}: no such folder.")
        print_summary(build_report(args.folder, args.resamples, args.seed))
        if args.compare:
            (args.folder / "report" / "comparison.json").unlink(missing_ok=True)  # never a stale one
            result = compare(args.folder, args.compare, args.resamples, args.seed)
            write_json(args.folder / "report" / "comparison.json", result)
            for note in result["notes"]:
                print(f"Note: {note}.")
            print(
                f"out-of-fold AUROC difference {result['estimate']:+.3f} "
                f"(95 % CI {result['low']:+.3f} to {result['high']:+.3f}, {result['images']} paired images; "
                f"{args.folder} not better in {100 * result['share_not_better']:.1f} % of resamples)"
            )
    except BrainMRIError as err:
        stop(err)


if __name__ == "__main__":
    main()
