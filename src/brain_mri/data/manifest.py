"""A data set listed in a CSV manifest instead of class folders: ``path,label[,group][,source]``.

``path`` is relative to the manifest's folder (the data root); ``label`` a class name; ``group`` a patient
or study ID that the split keeps whole (detected copies join it); ``source`` the hospital, scanner or
collection an image comes from. The whole manifest is checked before anything is decoded, and every
problem is named in one message.
"""

from __future__ import annotations

import csv
import logging
import posixpath
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from brain_mri.data.folder import ImageFile
from brain_mri.errors import BrainMRIError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("group", "source")
SHOWN = 10  # problems of one kind named in the message; the rest are counted
EXTRA = "(cells past the last column)"  # where csv puts a row's surplus cells
FEW = 5  # a class read from the labels with fewer images than this is said (a typo makes a class)


@dataclass
class Manifest:
    """The images a manifest lists, in its order, with each one's group and source (None: no column)."""

    files: list[ImageFile]
    groups: dict[str, str] | None  # path -> group ID
    sources: dict[str, str] | None  # path -> source


def listed(kind: str, items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"{kind} ({len(items)}): {', '.join(items[:SHOWN])}{more}"


def read_manifest(path: Path, class_names: list[str] | None = None) -> Manifest:
    """The manifest at ``path``, checked whole: its columns, a file for every row, a label for every row
    (one of ``class_names`` when given), each file listed once, no blank group or source in a column that
    is there."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [
                {k.strip() if k else EXTRA: v if k is None else (v or "").strip() for k, v in row.items()}
                for row in reader
            ]
    except OSError as err:
        raise BrainMRIError(f"data.manifest={path} cannot be read ({err.strerror}).") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise BrainMRIError(f"data.manifest={path} is not a CSV file in UTF-8 ({err}).") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise BrainMRIError(
            f"data.manifest={path} needs the columns {', '.join(REQUIRED_COLUMNS)} (and may have "
            f"{', '.join(OPTIONAL_COLUMNS)}); it has {', '.join(columns) or 'none'}."
        )
    if not rows:
        raise BrainMRIError(f"data.manifest={path} lists no images.")
    root = path.parent.resolve()
    optional = [c for c in OPTIONAL_COLUMNS if c in columns]
    problems: dict[str, list[str]] = defaultdict(list)
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"line {number}"
        if row.get(EXTRA):
            problems["rows with more cells than columns"].append(where)
        if not row["path"]:
            problems["rows without a path"].append(where)
            continue
        row["path"] = posixpath.normpath(row["path"])  # no/./a.png is no/a.png
        relative = Path(row["path"])
        if relative.is_absolute() or ".." in relative.parts:
            problems["paths not relative to the manifest's folder"].append(row["path"])
            continue
        if row["path"] in seen:
            problems["files listed more than once"].append(
                f"{row['path']} (lines {seen[row['path']]}, {number})"
            )
            continue
        seen[row["path"]] = number
        if not (root / relative).is_file():
            problems["files that do not exist"].append(row["path"])
        if not row["label"]:
            problems["rows without a label"].append(where)
        elif class_names and row["label"] not in class_names:
            problems[f"labels not in data.class_names ({', '.join(class_names)})"].append(
                f"{row['label']} ({row['path']})"
            )
        for column in optional:
            if not row.get(column):
                problems[f"blank {column} cells"].append(f"{where} ({row['path']})")
    if "group" in optional:  # the split deals whole groups per class
        labels_of: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            labels_of[row["group"]].add(row["label"])
        problems["groups whose images have more than one label (a group is dealt whole, per class)"] += [
            f"{group} ({', '.join(sorted(labels))})" for group, labels in labels_of.items() if len(labels) > 1
        ]
        problems = defaultdict(list, {kind: items for kind, items in problems.items() if items})
    if problems:
        raise BrainMRIError(
            f"data.manifest={path} has problems; nothing was read:\n"
            + "\n".join(f"  {listed(kind, items)}" for kind, items in problems.items())
        )
    names = list(class_names) if class_names else sorted({row["label"] for row in rows})
    sizes = Counter(row["label"] for row in rows)
    few = [f"{name} ({sizes[name]})" for name in names if sizes[name] < FEW]
    if few and not class_names:
        log.warning(
            "data.manifest=%s: the classes %s hold fewer than %d images: a typo in a label makes a class. "
            "data.class_names=[...] fixes the classes (a label outside them is then refused).",
            path,
            ", ".join(few),
            FEW,
        )
    files = [ImageFile(row["path"], row["label"], names.index(row["label"])) for row in rows]
    return Manifest(
        files,
        {row["path"]: row["group"] for row in rows} if "group" in optional else None,
        {row["path"]: row["source"] for row in rows} if "source" in optional else None,
    )
