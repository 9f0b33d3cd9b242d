"""Read and write the files a run leaves behind; every later tool reads only these."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

SPLIT_FILE = "split.csv"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
SPLIT_FIELDS = ("path", "class", "label", "partition", "fold", "group", "sha256")
BAD_IMAGES_FILE = "bad_images.csv"
PREDICTION_FIELDS = ("path", "label", "probability", "predicted")
CONFIG_FILE = "config.yaml"


def write_csv(path: Path, rows: list[dict], fields: tuple[str, ...]) -> None:
    """Only ``fields`` are written, in that order; other keys of the rows are left out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_json(path: Path, values: dict) -> None:
    """JSON with plain floats; NaN is written as null so that every JSON reader accepts the file."""

    def plain(value):
        value = value.item() if hasattr(value, "item") else value
        return None if isinstance(value, float) and math.isnan(value) else value

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: plain(v) for k, v in values.items()}, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def write_resolved_config(output_dir: Path, cfg) -> None:
    """The run's whole config with every interpolation resolved (Hydra's own copy keeps them)."""
    from omegaconf import OmegaConf

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))


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
