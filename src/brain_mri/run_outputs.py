"""Read and write the files a run leaves behind; every later tool reads only these."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

SPLIT_FILE = "split.csv"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
SPLIT_FIELDS = ("path", "class", "label", "partition", "group")
PREDICTION_FIELDS = ("path", "label", "probability", "predicted")


def write_csv(path: Path, rows: list[dict], fields: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
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
