"""Report on a sweep or a run: ``python -m brain_mri.report <folder>``.

Reads only what runs wrote (``config.yaml``, ``.hydra/overrides.yaml``, ``metrics.json``,
``csv/metrics.csv``, ``predictions.csv``, ``split.csv``), so it works on a sweep that is still running or
partly failed. Writes ``<folder>/report/``: runs.csv, runs.md, best.json, grid_3d.png (the minimum
validation loss over the swept settings), for the best run curves_/roc_/confusion_<run>.png, and all of it
as one page, index.html. Runs on different data (``run_info.json``'s data fingerprint) are ranked
separately: each data set has its own tables, best run and grid figure. Evaluations (eval.py's folders)
below ``<folder>`` get their own tables, and the maps they drew against boxes are on the page
(``report/evaluations.py``).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from omegaconf import OmegaConf

from brain_mri.data.split import read_split
from brain_mri.errors import BrainMRIError, print_undecodable_escaped, stop
from brain_mri.report import figures
from brain_mri.report.evaluations import evaluation_sections, find_evaluations, is_evaluation, read_evaluation
from brain_mri.report.page import BestRun, evaluation_gallery, gallery, write_page
from brain_mri.report.statistics import METRIC_NAMES, bootstrap_intervals, paired_difference, positive_label
from brain_mri.report.tables import print_summary, render_markdown, report_sections
from brain_mri.runs.files import (
    CONFIG_FILE,
    EPOCH_LOG,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RUN_INFO_FILE,
    SPLIT_FILE,
    VAL_PREDICTIONS_FILE,
    atomic_write_text,
    files_named,
    is_inside,
    natural_order,
    read_config,
    read_epochs,
    read_json,
    read_predictions,
    run_overrides,
    write_csv,
    write_json,
)
from brain_mri.runs.resume import config_as_resumed, resume_changes

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
    """Every training run folder at or below ``folder``, in natural order: a folder in which a run wrote
    its resolved config, or (a sweep job that failed at start) Hydra's record and the failed status."""
    configs = files_named(folder, CONFIG_FILE)  # linked run folders too
    written = {p.parent for p in configs if p.parent.name != ".hydra"}
    failed = {p.parent.parent for p in configs if p.parent.name == ".hydra"}
    runs = written | {run for run in failed if (run / METRICS_FILE).is_file() and not is_evaluation(run)}

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
    info = read_json(run / RUN_INFO_FILE) if (run / RUN_INFO_FILE).is_file() else {}
    # a job that failed before recording its data: where its config would have read it (None if unresolved)
    row["data_root"] = info.get("data_root") or select("data.root")
    row["data_fingerprint"] = info.get("data_fingerprint")
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
    every row: the run's command line value, or its config's (a default) where the command line set none;
    for a config group (``trainer=gpu``) the option Hydra chose, not the group's contents. The ``data``
    group is the ``data`` column (see ``group_by_data``)."""
    covered = set(SETTINGS.values()) | {"model", "data"}
    keys = sorted({k for r in rows for k in r["overrides"]} - covered)
    keys = [k for k in keys if not k.startswith(NOT_SETTINGS)]
    swept = [k for k in keys if len({r["overrides"].get(k) for r in rows}) > 1]
    for row in rows:
        for key in swept:
            default = OmegaConf.select(row["config"], key, default=None)
            if OmegaConf.is_config(default):
                default = hydra_choices(row["folder"]).get(key)
            row[key] = row["overrides"].get(key, None if default is None else str(default))
    return swept


def hydra_choices(run: Path) -> dict:
    """The option of each config group Hydra composed the run from (``.hydra/hydra.yaml``); empty for a
    run that was not started by Hydra's command line."""
    path = run / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    choices = OmegaConf.select(read_config(path), "hydra.runtime.choices", throw_on_resolution_failure=False)
    return {str(group): option for group, option in choices.items()} if OmegaConf.is_config(choices) else {}


class DataSet(NamedTuple):
    """Runs on the same data: only these are ranked against each other."""

    key: str  # the data fingerprint; "root:<name>" for runs that recorded none
    label: str  # the data root's folder name, with the fingerprint's start where two data sets share it
    rows: list[dict]  # best first


def root_name(row: dict) -> str | None:
    """The name of the folder the run read its data from (``brain_tumor_dataset``, ``synthetic``)."""
    return Path(row["data_root"]).name or None if row["data_root"] else None


def group_by_data(rows: list[dict]) -> list[DataSet]:
    """The rows per data set, the one with the most runs first; sets each row's ``data_key`` and ``data``
    (its data set's label). A data set is its fingerprint (paths and contents of its images); a run that
    recorded none (it failed before reading the data) joins the only data set read from a folder of the
    same name, or when its folder is unknown, the only data set there is."""
    fingerprints_by_name: dict[str | None, set[str]] = {}
    for row in rows:
        if row["data_fingerprint"]:
            fingerprints_by_name.setdefault(root_name(row), set()).add(row["data_fingerprint"])
    every = {fingerprint for named in fingerprints_by_name.values() for fingerprint in named}
    groups: dict[str, list[dict]] = {}
    for row in rows:
        name = root_name(row)
        candidates = fingerprints_by_name.get(name, set()) if name else every
        key = row["data_fingerprint"] or (
            next(iter(candidates)) if len(candidates) == 1 else f"root:{name or 'unknown'}"
        )
        groups.setdefault(key, []).append(row)
    names = {
        key: next((n for n in map(root_name, members) if n), "unknown") for key, members in groups.items()
    }

    def label(key: str, name: str) -> str:
        if list(names.values()).count(name) == 1:
            return name
        return f"{name} ({'no fingerprint' if key.startswith('root:') else key[:8]})"

    labels = {key: label(key, name) for key, name in names.items()}
    for key, members in groups.items():
        for row in members:
            row["data_key"], row["data"] = key, labels[key]
    order = sorted(groups, key=lambda key: (-len(groups[key]), labels[key]))
    return [DataSet(key, labels[key], sorted(groups[key], key=sort_key)) for key in order]


def data_sets_note(data_sets: list[DataSet]) -> str:
    """Said once, in every form of the report, when the runs used more than one data set."""
    if len(data_sets) < 2:
        return ""
    labels = ", ".join(data_set.label for data_set in data_sets)
    return (
        f"These runs used {len(data_sets)} different data sets ({labels}; told apart by the data fingerprint "
        "each run recorded) and are ranked separately: a loss or metric on one data set does not compare "
        "with one on another."
    )


def grid_settings(rows: list[dict], extra: list[str]) -> list[str]:
    """The settings that vary among these runs (folds of one configuration do not)."""
    candidates = ["model", "batch_size", "lr", "weight_decay", *(k for k in extra if k != "data.fold")]
    return [k for k in candidates if len({r[k] for r in rows}) > 1]


def completed(rows: list[dict]) -> list[dict]:
    """The completed runs of ``rows``, in their order (best first: the first is the best run)."""
    return [row for row in rows if row["status"] == "completed"]


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
    images, groups = [], []
    for row, part in zip(folds, parts, strict=True):
        split = {r["path"]: r for r in read_split(row["folder"] / SPLIT_FILE)}
        images += [(path, split[path]["sha256"]) for path in part.paths]
        groups += [split[path]["group"] for path in part.paths]  # one split for every fold: one numbering
    classes = parts[0].class_names
    labels = np.concatenate([part.labels for part in parts])
    probabilities = np.concatenate([part.probabilities for part in parts])
    positive = positive_label(classes, read_json(folds[0]["folder"] / METRICS_FILE).get("positive_class"))
    return {
        "folds": expected,
        "images": len(labels),
        "scans": len(set(groups)),
        "classes": classes,
        "positive": positive,
        "predicted_images": images,
        "groups": np.array(groups),
        "labels": labels,
        "probabilities": probabilities,
        "metrics": bootstrap_intervals(
            labels, probabilities, positive, resamples=resamples, seed=seed, groups=np.array(groups)
        ),
        "per_class": per_class(labels, probabilities.argmax(axis=1), classes),
    }


def per_class(labels: np.ndarray, predicted: np.ndarray, classes: list[str]) -> list[dict]:
    """Each true class: its images, its sensitivity (recall) and how its images were predicted (a row of
    the confusion matrix)."""
    rows = []
    for label, name in enumerate(classes):
        mine = labels == label
        counts = {f"predicted {other}": int(np.sum(predicted[mine] == k)) for k, other in enumerate(classes)}
        recall = float(np.mean(predicted[mine] == label)) if mine.any() else math.nan
        rows.append({"class": name, "images": int(mine.sum()), "sensitivity": recall} | counts)
    return rows


def cross_validation_summary(
    rows: list[dict], extra: list[str], resamples: int = 2000, seed: int = 0
) -> list[dict]:
    """Per configuration with at least one finished fold: mean and standard deviation across folds, and
    once every fold has finished, the out-of-fold metrics with bootstrap intervals."""
    extra_keys = [k for k in extra if k != "data.fold"]
    configs: dict[tuple, list[dict]] = {}
    for row in rows:  # never folds of two data sets together
        if row["fold"] is not None and row["status"] == "completed":
            key = (row["data_key"], row["model"], row["batch_size"], row["lr"], row["weight_decay"])
            key += tuple(row[k] for k in extra_keys)
            configs.setdefault(key, []).append(row)
    summary = []
    for key, members in configs.items():
        entry = {"data_key": key[0], "data": members[0]["data"]}
        entry |= dict(zip(("model", "batch_size", "lr", "weight_decay"), key[1:5], strict=True))
        entry["swept"] = dict(zip(extra_keys, key[5:], strict=True))
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
            entry["oof scans"] = entry["oof"]["scans"]
        summary.append(entry)
    return sorted(summary, key=lambda e: e["val_loss_best mean"])


def best_run_figures(row: dict, out: Path, resamples: int, seed: int) -> dict:
    """Curves, ROC and confusion matrix of the best run, and bootstrap intervals of its test metrics."""
    run = row["folder"]
    name = row["run"].replace("/", "_")
    figures.curves(
        read_epochs(run / EPOCH_LOG),
        row["best_epoch"],
        f"best run: {row['run']}",
        out / f"curves_{name}.png",
    )
    classes, paths, labels, probabilities, predicted = read_predictions(run / PREDICTIONS_FILE)
    positive = positive_label(classes, read_json(run / METRICS_FILE).get("positive_class"))
    group_of = {r["path"]: r["group"] for r in read_split(run / SPLIT_FILE)}
    groups = np.array([group_of[path] for path in paths])  # copies of one scan are one case
    intervals = bootstrap_intervals(
        labels, probabilities, positive, resamples=resamples, seed=seed, groups=groups
    )
    auroc = intervals["auroc"]["estimate"]
    figures.roc(
        labels, probabilities, classes, positive, auroc, f"ROC, {row['run']}", out / f"roc_{name}.png"
    )
    figures.confusion(labels, predicted, classes, f"test, {row['run']}", out / f"confusion_{name}.png")
    return {
        "run": row["run"],
        "folder": run,
        "classes": classes,
        "positive_class": None if positive is None else classes[positive],
        "averaging": "binary, positive class" if positive is not None else "macro over classes (one-vs-rest)",
        "settings": {k: row[k] for k in SETTINGS},
        "val/loss_best": row["val_loss_best"],
        "test_images": len(labels),
        "test_scans": len(set(groups.tolist())),
        "per_source": read_json(run / METRICS_FILE).get("per_source"),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95, "unit": "scan (duplicate group)"},
        "metrics": intervals,
    }


def build_report(folder: Path, resamples: int = 2000, seed: int = 0) -> dict:
    """Write every report file; returns the rows, the cross-validation summaries, the best run (of the
    first data set) and per data set its rows, summaries and best run."""
    folder = folder.resolve()
    if not folder.is_dir():
        raise BrainMRIError(f"{folder} is not a folder: give a sweep, run or evaluations folder.")
    runs, evaluated = find_runs(folder), find_evaluations(folder)
    if not runs and not evaluated:
        raise BrainMRIError(
            f"No runs under {folder} (a run folder holds {CONFIG_FILE}), and no evaluations (eval.py's "
            f"folders, with {METRICS_FILE})."
        )
    rows = [read_run(run, folder) for run in runs]
    extra = add_swept_columns(rows)
    data_sets = group_by_data(rows)
    rows = [row for data_set in data_sets for row in data_set.rows]
    evaluations = [read_evaluation(found, folder) for found in evaluated]
    # every gallery is read before anything is written: a damaged one leaves the last report as it was
    several = len(data_sets) > 1
    galleries = [
        gallery(BestRun(best["run"], best["folder"], data_set.label if several else None))
        for data_set in data_sets
        if (best := next(iter(completed(data_set.rows)), None))
    ]
    galleries += [found for found in map(evaluation_gallery, evaluations) if found]
    out = folder / "report"
    try:
        out.mkdir(exist_ok=True)
    except OSError as err:
        raise BrainMRIError(
            f"cannot write the report folder {out} ({err.strerror}): copy the runs to a folder you can write."
        ) from None
    columns = run_columns(extra)  # every run's whole record
    if rows:
        write_csv(out / "runs.csv", rows, (*columns, "error", "data_fingerprint"))
    reports = [
        report_data_set(data_set, index, extra, out, resamples, seed)
        for index, data_set in enumerate(data_sets)
    ]
    records = [best_record(part) for part in reports if part["best"]]
    if records:  # the first data set's best run, and the others' after it
        write_json(out / "best.json", records[0] | ({"other_data_sets": records[1:]} if records[1:] else {}))
    sections = [
        section
        for data_set, part in zip(data_sets, reports, strict=True)
        for section in report_sections(
            data_set.label,
            data_set.rows,
            part["columns"],
            part["cross_validation"],
            part["repeated"],
            part["best"],
        )
    ]
    sections += evaluation_sections(evaluations)
    note = data_sets_note(data_sets)
    atomic_write_text(out / "runs.md", render_markdown(sections, note))
    bests = [part["best"] for part in reports if part["best"]]
    write_page(out, sections, galleries, note, no_best_run=bool(rows) and not bests)
    return {
        "rows": rows,
        "columns": columns,
        "cross_validation": [entry for part in reports for entry in part["cross_validation"]],
        "repeated": [entry for part in reports for entry in part["repeated"]],
        "best": bests[0] if bests else None,
        "data_sets": reports,
        "evaluations": evaluations,
        "note": note,
        "folder": out,
    }


def run_columns(swept: list[str]) -> list[str]:
    """The runs table's columns: the settings, the other ``swept`` ones, the results."""
    return [
        "run",
        "data",
        *SETTINGS,
        *swept,
        "epochs",
        "best_epoch",
        "val_loss_best",
        *TEST_COLUMNS,
        "status",
    ]


def report_data_set(
    data_set: DataSet, index: int, extra: list[str], out: Path, resamples: int, seed: int
) -> dict:
    """One data set's cross-validation summaries, grid figure and best run, over the settings that vary
    among its own runs; the first data set's grid is ``grid_3d.png``, another's ``grid_3d_<data set>.png``."""
    # the settings that vary among this data set's runs, not those that only differ from another's
    extra = [key for key in extra if len({row.get(key) for row in data_set.rows}) > 1]
    columns = run_columns(extra)
    if all(row["fold"] is None for row in data_set.rows):
        columns.remove("fold")
    cv = cross_validation_summary(data_set.rows, extra, resamples, seed)
    finished = completed(data_set.rows)
    best = None
    suffix = "" if index == 0 else "_" + re.sub(r"[^\w.-]+", "_", data_set.label).strip("_")
    if finished:
        title = f"{figures.LOSS}, {data_set.label}"
        figures.grid(finished, grid_settings(finished, extra), title, out / f"grid_3d{suffix}.png")
        best = best_run_figures(finished[0], out, resamples, seed)
        best |= {"data": data_set.label, "data_fingerprint": finished[0]["data_fingerprint"]}
    if cv and cv[0]["oof"]:  # the best cross-validated configuration, every non-test image once
        oof = cv[0]["oof"]
        title = f"out-of-fold, {cv[0]['model']}, {oof['folds']} folds, {data_set.label}"
        predicted = oof["probabilities"].argmax(axis=1)
        figures.confusion(oof["labels"], predicted, oof["classes"], title, out / f"confusion_oof{suffix}.png")
    return {
        "data": data_set.label,
        "columns": columns,
        "extra": extra,
        "rows": data_set.rows,
        "cross_validation": cv,
        "repeated": repeated_cross_validation(cv),
        "best": best,
    }


def best_record(part: dict) -> dict:
    """What best.json says of a data set's best run, and of its best configuration's out-of-fold
    predictions once every fold has finished."""
    best, cv = part["best"], part["cross_validation"]
    record = {k: v for k, v in best.items() if k not in ("metrics", "folder")} | flat_metrics(best["metrics"])
    return record | ({"out_of_fold": out_of_fold_record(cv[0])} if cv and cv[0]["oof"] else {})


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
        "scans": oof["scans"],
        "per_class": oof["per_class"],
        "bootstrap": {
            "unit": "scan (duplicate group) of the non-test images, each predicted by the fold model that "
            "did not train on it"
        },
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


def finished_cross_validations(folder: Path, seed: int) -> dict[str, list[dict]]:
    """A sweep folder's finished cross-validations per data set (its key), lowest mean validation loss
    first, each named by its configuration."""
    if not folder.is_dir():
        raise BrainMRIError(f"No such folder: {folder}.")
    rows = [read_run(run, folder.resolve()) for run in find_runs(folder.resolve())]
    extra = add_swept_columns(rows)
    found = {}
    for data_set in group_by_data(rows):
        summary = cross_validation_summary(data_set.rows, extra, resamples=1, seed=seed)
        finished = [entry for entry in summary if entry["oof"]]
        for entry in finished:
            entry["name"] = ", ".join(
                f"{k}={entry[k]}" for k in ("model", "batch_size", "lr", "weight_decay", *entry["swept"])
            )
        if finished:
            found[data_set.key] = finished
    if not found:
        raise BrainMRIError(f"{folder} holds no finished cross-validation (all folds, val_predictions.csv).")
    return found


def compared_data(first: Path, second: Path, seed: int) -> tuple[list[list[dict]], list[str]]:
    """The finished cross-validations of each folder on the data set they are compared on, and notes on
    the choice: the first data set of the first folder that the second holds as well; folders that share
    none are compared only when each holds one data set (the images both predicted are compared)."""
    found = [finished_cross_validations(folder, seed) for folder in (first, second)]
    common = [key for key in found[0] if key in found[1]]
    if common:
        keys = [common[0], common[0]]
    elif len(found[0]) == len(found[1]) == 1:
        keys = [next(iter(side)) for side in found]
    else:
        labels = [", ".join(entries[0]["data"] for entries in side.values()) for side in found]
        raise BrainMRIError(
            f"{first} (data: {labels[0]}) and {second} (data: {labels[1]}) hold no cross-validation on "
            "the same data set: compare sweeps made on the same data."
        )
    chosen = [side[key] for side, key in zip(found, keys, strict=True)]
    notes = [
        f"{folder} holds cross-validations on {len(side)} data sets; compared: those on {entries[0]['data']}"
        for folder, side, entries in zip((first, second), found, chosen, strict=True)
        if len(side) > 1
    ]
    if keys[0] != keys[1]:
        notes.append(
            f"the two sweeps were made on different data ({chosen[0][0]['data']} and {chosen[1][0]['data']}: "
            "other data fingerprints)"
        )
    return chosen, notes


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
    chosen, notes = compared_data(first, second, seed)
    entries = [side[0] for side in chosen]
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
        groups=a["groups"][rows_a],
    )
    notes += [
        f"{folder} holds {len(side)} finished cross-validations on {side[0]['data']}; compared: the one with "
        f"the lowest mean validation loss ({side[0]['name']})"
        for folder, side in zip((first, second), chosen, strict=True)
        if len(side) > 1
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
        "first_data": entries[0]["data"],
        "second_data": entries[1]["data"],
        "settings_that_differ": differing_settings(entries[0]["runs"][0], entries[1]["runs"][0]),
        "metric": "out-of-fold AUROC, first minus second",
        "notes": notes,
    } | result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m brain_mri.report", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folder",
        type=Path,
        help="a sweep folder (outputs/multiruns/...), a run folder, or evaluations (outputs/evals)",
    )
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="FOLDER",
        help="another cross-validation sweep: paired bootstrap of the out-of-fold AUROC difference",
    )
    args = parser.parse_args(argv)
    print_undecodable_escaped()
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
                f"(95 % CI {result['low']:+.3f} to {result['high']:+.3f}, {result['images']} paired images, "
                f"{result['scans']} scans; "
                f"{args.folder} not better in {100 * result['share_not_better']:.1f} % of resamples)"
            )
    except BrainMRIError as err:
        stop(err)
