"""Read and write the files a run leaves behind; every later tool reads only these."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

from lightning.pytorch.utilities.exceptions import SIGTERMException

from brain_mri.atomic import atomic_path
from brain_mri.errors import BrainMRIError

SPLIT_FILE = "split.csv"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
# the best checkpoint's predictions of the validation partition: over the folds of a cross-validation,
# every non-test image once (out-of-fold)
VAL_PREDICTIONS_FILE = "val_predictions.csv"
BAD_IMAGES_FILE = "bad_images.csv"
BAD_IMAGE_FIELDS = ("path", "reason")
NEAR_DUPLICATES_FILE = "near_duplicates.csv"  # look-alikes under different classes, not grouped
NEAR_DUPLICATE_FIELDS = ("path", "class", "other_path", "other_class", "similarity")
PROBABILITY_PREFIX = "prob_"
CONFIG_FILE = "config.yaml"
RUN_INFO_FILE = "run_info.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = f"{CHECKPOINT_DIR}/last.ckpt"
EPOCH_LOG = "csv/metrics.csv"
GALLERY_DIR = "gallery"  # Grad-CAM overlays of test images, misclassified first
GALLERY_FILE = "gallery.csv"  # one row per overlay
GALLERY_FIELDS = ("image", "path", "class", "predicted_class", "probability")
BOX_GALLERY_FIELDS = (*GALLERY_FIELDS, "true_class_probability", "peak")  # an evaluation's, on boxes


def run_folder_of(checkpoint: str | Path) -> Path:
    """The run folder a checkpoint was written into (``<run>/checkpoints/<file>.ckpt``)."""
    return Path(checkpoint).resolve().parent.parent


# File names that are not valid UTF-8 (Latin-1 bytes from old archives) reach Python as lone surrogates;
# "surrogateescape" writes them back as the original bytes and reads them again unchanged.
ENCODING: dict[str, Any] = {"encoding": "utf-8", "errors": "surrogateescape"}


def natural_order(path: Path) -> list:
    """Sort key: run folders 2 before 10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def is_inside(value: Any, folder: str) -> bool:
    """Whether ``value`` is the path ``folder`` or a path inside it (as text, as configs record paths)."""
    return isinstance(value, str) and (value == folder or value.startswith(folder.rstrip("/") + "/"))


def walk_folders(root: Path, exclude: Path | None = None) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk`` in sorted order that follows linked folders (a sweep assembled from links to runs of
    other sweeps) and enters each real folder once, so a link loop ends; never ``exclude``. Callers may
    prune the sub-folders they are given, as with ``os.walk``."""
    skipped = exclude.resolve() if exclude else None
    seen: set[Path] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = Path(folder).resolve()
        if real in seen or real == skipped:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()
        yield Path(folder), subfolders, sorted(names)


def files_named(root: Path, name: str) -> list[Path]:
    """Every file called ``name`` at or below ``root``, in linked folders too."""
    return [folder / name for folder, _, names in walk_folders(root) if name in names]


def best_checkpoints(path: str | Path) -> list[Path]:
    """A checkpoint file, or the best checkpoint of every completed run at or below a run or sweep folder
    (read from each run's ``metrics.json``; found beside it when the folder was moved)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BrainMRIError(f"No checkpoint file or run folder at {path}.")
    found, failed = [], []
    for metrics_file in sorted(files_named(path, METRICS_FILE), key=natural_order):
        metrics = read_json(metrics_file)
        best = metrics.get("best_checkpoint")
        if metrics.get("status") == "completed" and best:
            beside = metrics_file.parent / CHECKPOINT_DIR / Path(best).name
            found.append(beside if beside.is_file() else Path(best))
        elif metrics.get("error"):
            failed.append(f"{metrics_file.parent}: {str(metrics['error']).splitlines()[0]}")
    if not found:
        held = sorted(path.glob("*.ckpt"))
        hint = f" It holds {held[0].name}: pass that file, or the run folder {path.parent}." if held else ""
        hint += f" {len(failed)} run(s) failed; the first: {failed[0]}" if failed else ""
        raise BrainMRIError(
            f"No completed training run (metrics.json with a best checkpoint) under {path}.{hint}"
        )
    missing = [str(p) for p in found if not p.is_file()]
    if missing:
        raise BrainMRIError(f"No checkpoint file at {', '.join(missing)}.")
    return found


def one_checkpoint(ckpt_path: str | Path) -> Path:
    """The checkpoint file, or the best checkpoint of a run folder; a sweep folder is refused."""
    checkpoints = best_checkpoints(ckpt_path)
    if len(checkpoints) > 1:
        raise BrainMRIError(f"{ckpt_path} holds {len(checkpoints)} runs: name one checkpoint or run folder.")
    return checkpoints[0]


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it into place: a reader sees the old file or
    the whole new one, never a half-written file, even when the writer is killed."""
    with atomic_path(path) as temporary, open(temporary, "w", newline="", **ENCODING) as handle:
        handle.write(text)


def write_csv(path: Path, rows: list[dict], fields: tuple[str, ...]) -> None:
    """Only ``fields`` are written, in that order; other keys of the rows are left out."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV file; one message that names a damaged file (a row longer than its header)."""
    with open(path, newline="", **ENCODING) as handle:
        rows = list(csv.DictReader(handle))
    damaged = next((number for number, row in enumerate(rows, start=2) if None in row), None)
    if damaged is not None:
        raise BrainMRIError(f"{path} is damaged: line {damaged} has more fields than its header.")
    return rows


def write_json(path: Path, values: dict) -> None:
    """JSON with plain floats; NaN is written as null so that every JSON reader accepts the file."""

    def plain(value):
        value = value.item() if hasattr(value, "item") else value
        return None if isinstance(value, float) and math.isnan(value) else value

    text = json.dumps({k: plain(v) for k, v in values.items()}, indent=2, sort_keys=True)
    atomic_write_text(path, text + "\n")


def failure_record(err: BaseException) -> dict:
    """What ``metrics.json`` says of a run that did not complete: interrupted (Ctrl-C, or SIGTERM, as a
    cluster's scheduler sends when a job's time is up), or failed."""
    if isinstance(err, SIGTERMException):
        return {"status": "interrupted", "error": "SIGTERM: the process was asked to stop"}
    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
    return {"status": status, "error": str(err) or type(err).__name__}


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(**ENCODING))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BrainMRIError(f"{path} is damaged and cannot be read ({err}).") from None


def read_config(path: Path) -> Any:
    """A run's YAML config (OmegaConf), or one message that names a damaged file."""
    import yaml
    from omegaconf import OmegaConf

    try:
        return OmegaConf.load(path)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first_line = str(err).splitlines()[0]
        raise BrainMRIError(f"{path} is damaged and cannot be read ({first_line}).") from None


def write_resolved_config(output_dir: Path, cfg) -> None:
    """The run's whole config with every interpolation resolved (Hydra's own copy keeps them)."""
    from omegaconf import OmegaConf

    atomic_write_text(output_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))


def read_epochs(csv_file: Path) -> list[dict]:
    """CSVLogger rows merged per epoch: {"epoch": 0, "train/loss": ..., "val/loss": ...}, in epoch order."""
    if not csv_file.is_file():
        return []
    epochs: dict[int, dict] = {}
    for row in read_csv(csv_file):
        if not row.get("epoch"):
            continue
        epoch = epochs.setdefault(int(row["epoch"]), {"epoch": int(row["epoch"])})
        epoch.update({k: float(v) for k, v in row.items() if v and k not in ("epoch", "step")})
    return [epochs[e] for e in sorted(epochs)]


def predictions_file(partition: str) -> str:
    return PREDICTIONS_FILE if partition == "test" else VAL_PREDICTIONS_FILE


def prediction_fields(
    class_names: list[str], spread: bool = False, labelled: bool = True, explained: bool = False
) -> tuple[str, ...]:
    """The columns of ``predictions.csv``: the true class (``labelled``), one probability per class named
    ``prob_<class>``, the prediction, for an ensemble or test-time augmentation the ``spread``, and with
    Grad-CAM the overlay's path in the output folder (``explanation``)."""
    probabilities = tuple(f"{PROBABILITY_PREFIX}{name}" for name in class_names)
    truth = ("label", "class") if labelled else ()
    optional = (("spread",) if spread else ()) + (("explanation",) if explained else ())
    return ("path", *truth, *probabilities, "predicted", "predicted_class", *optional)


def prediction_row(
    path: str, probabilities: list[float], class_names: list[str], label: int | None = None, spread=None
) -> dict:
    """One image: its path, true class (when known), each class's probability, the predicted class and
    (``spread`` given) how much the averaged models or views disagree on it."""
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    truth = {} if label is None else {"label": label, "class": class_names[label]}
    return {
        "path": path,
        **truth,
        **{f"{PROBABILITY_PREFIX}{name}": p for name, p in zip(class_names, probabilities, strict=True)},
        "predicted": best,
        "predicted_class": class_names[best],
        **({} if spread is None else {"spread": spread}),
    }


def prediction_rows(files: list, probabilities, class_names: list[str], spread=None) -> list[dict]:
    """The rows of labelled images (``ImageFile``) and their (N, K) probabilities."""
    spreads = spread.tolist() if spread is not None else [None] * len(files)
    return [
        prediction_row(item.path, row, class_names, item.label, disagreement)
        for item, row, disagreement in zip(files, probabilities.tolist(), spreads, strict=True)
    ]


class CsvAppender:
    """A CSV file written row by row (for outputs too large to hold), renamed into place when complete,
    so a reader never sees half a file."""

    def __init__(self, path: Path, fields: tuple[str, ...]):
        self.path = path
        self.fields = fields
        self.stack = ExitStack()

    def __enter__(self) -> CsvAppender:
        partial = self.stack.enter_context(atomic_path(self.path))
        self.file = self.stack.enter_context(open(partial, "w", newline="", **ENCODING))
        self.writer = csv.DictWriter(
            self.file, fieldnames=self.fields, lineterminator="\n", extrasaction="ignore"
        )
        self.writer.writeheader()
        return self

    def write(self, row: dict) -> None:
        self.writer.writerow(row)

    def __exit__(self, kind, error, trace) -> None:
        self.stack.__exit__(kind, error, trace)  # closes the file, then renames it or removes it


class Predictions(NamedTuple):
    """A ``predictions.csv`` as arrays: labels (N,), probabilities (N, K), predicted (N,)."""

    class_names: list[str]
    paths: list[str]
    labels: Any
    probabilities: Any
    predicted: Any


def read_predictions(path: Path) -> Predictions:
    import numpy as np

    rows = read_csv(path)
    columns = [c for c in (rows[0] if rows else {}) if c.startswith(PROBABILITY_PREFIX)]
    return Predictions(
        class_names=[c[len(PROBABILITY_PREFIX) :] for c in columns],
        paths=[r["path"] for r in rows],
        labels=np.array([int(r["label"]) for r in rows], dtype=int),
        probabilities=np.array([[float(r[c]) for c in columns] for r in rows], dtype=float).reshape(
            len(rows), len(columns)
        ),
        predicted=np.array([int(r["predicted"]) for r in rows], dtype=int),
    )


def write_near_duplicates(output_dir: Path, pairs: list[tuple[str, str, str, str, float]]) -> None:
    """``near_duplicates.csv``, when there are look-alikes under different classes to list."""
    if pairs:
        rows = [
            dict(zip(NEAR_DUPLICATE_FIELDS, (*pair[:4], round(pair[4], 4)), strict=True)) for pair in pairs
        ]
        write_csv(output_dir / NEAR_DUPLICATES_FILE, rows, NEAR_DUPLICATE_FIELDS)


def write_bad_images(output_dir: Path, bad: list[tuple[str, str]]) -> None:
    """The files a run left out (``data.on_bad_image=skip``) and why; nothing when none were."""
    if bad:
        rows = [{"path": path, "reason": reason} for path, reason in bad]
        write_csv(output_dir / BAD_IMAGES_FILE, rows, BAD_IMAGE_FIELDS)


def run_overrides(run_dir: Path) -> list[str]:
    """The command line's overrides a run started with (Hydra's ``.hydra/overrides.yaml``)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in read_config(path)] if path.is_file() else []


def write_run_info(
    output_dir: Path, data_root: str, data_fingerprint: str, images: int, init_from: dict | None = None
) -> None:
    """What is needed to repeat a run besides its config: versions, code revision, data fingerprint, and
    the checkpoint whose weights it started from (``init_from``)."""
    import platform
    import subprocess
    import sys
    from datetime import datetime, timezone
    from importlib import metadata

    packages = (
        "brain-mri",
        "torch",
        "torchvision",
        "lightning",
        "torchmetrics",
        "hydra-core",
        "numpy",
        "pillow",
    )
    source = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    write_json(
        output_dir / RUN_INFO_FILE,
        {
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
            "process": f"{platform.node()}:{os.getpid()}",
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": {name: metadata.version(name) for name in packages},
            "git_commit": commit,
            "git_dirty": bool(git("status", "--porcelain")) if commit else None,
            "data_root": data_root,
            "data_fingerprint": data_fingerprint,
            "data_images": images,
            **({"init_from": init_from} if init_from else {}),
        },
    )
