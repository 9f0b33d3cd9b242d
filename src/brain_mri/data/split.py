"""Grouped, stratified train/val/test split: every duplicate group lies in exactly one partition."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from brain_mri.data.images import ImageFile
from brain_mri.errors import BrainMRIError
from brain_mri.run_outputs import SPLIT_FIELDS, read_csv, write_csv

PARTITIONS = ("train", "val", "test")


def check_groups_have_one_class(files: list[ImageFile], groups: np.ndarray) -> None:
    """The same image under two classes is a labelling error that no split can fix: name the files."""
    members = defaultdict(list)
    for item, group in zip(files, groups, strict=True):
        members[group].append(item)
    conflicts = [m for m in members.values() if len({item.label for item in m}) > 1]
    if conflicts:
        lines = ["  " + ", ".join(item.path for item in m) for m in conflicts]
        raise BrainMRIError("The same image appears under more than one class:\n" + "\n".join(lines))


def grouped_stratified_split(
    labels: np.ndarray, groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """Partition name per image. Per class, whole groups are dealt in a seeded order: each goes to test
    while test is short of its share, then to val, else to train, so the sizes match the fractions to
    within one group and the result depends only on the data and the seed."""
    rng = np.random.default_rng(seed)
    partition = [""] * len(labels)
    for label in np.unique(labels):
        in_class = np.flatnonzero(labels == label)
        class_groups = sorted({int(groups[i]) for i in in_class})
        rng.shuffle(class_groups)
        targets = {"test": test_fraction * len(in_class), "val": val_fraction * len(in_class)}
        counts = {"test": 0, "val": 0}
        for group in class_groups:
            members = in_class[groups[in_class] == group]
            chosen = next((p for p in ("test", "val") if targets[p] - counts[p] >= len(members) / 2), "train")
            if chosen != "train":
                counts[chosen] += len(members)
            for i in members:
                partition[i] = chosen
    return partition


def split_rows(files: list[ImageFile], partitions: list[str], groups: np.ndarray) -> list[dict]:
    return [
        {"path": f.path, "class": f.class_name, "label": f.label, "partition": p, "group": int(g)}
        for f, p, g in zip(files, partitions, groups, strict=True)
    ]


def write_split(path: Path, rows: list[dict]) -> None:
    write_csv(path, rows, SPLIT_FIELDS)


def read_split(path: Path) -> list[dict]:
    """A saved split, checked for the columns and partition names this project writes."""
    if not Path(path).is_file():
        raise BrainMRIError(f"The split file {path} does not exist.")
    rows = read_csv(path)
    if not rows or set(SPLIT_FIELDS) - set(rows[0]):
        raise BrainMRIError(f"{path} is not a split file: it needs the columns {', '.join(SPLIT_FIELDS)}.")
    unknown = {r["partition"] for r in rows} - set(PARTITIONS)
    if unknown:
        raise BrainMRIError(f"{path} names unknown partitions {sorted(unknown)}; expected {PARTITIONS}.")
    return rows
