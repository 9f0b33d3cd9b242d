"""Grouped, stratified train/val/test split: every duplicate group lies in exactly one partition."""

from __future__ import annotations

import hashlib
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
    labels: np.ndarray,
    groups: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    num_folds: int = 0,
    fold: int = 0,
) -> tuple[list[str], list[int]]:
    """Partition name and cross-validation fold (-1: none) per image.

    Per class, whole groups are dealt in a seeded order. A group goes to test while test is short of its
    share, so the test partition depends only on the data, ``test_fraction`` and the seed, with or without
    cross-validation. The other groups go to val while val is short of its share, else to train; or, with
    ``num_folds`` >= 2, each to the fold that has the fewest images of its class so far, and fold ``fold``
    is the validation partition.
    """
    rng = np.random.default_rng(seed)
    partition, folds = [""] * len(labels), [-1] * len(labels)
    for label in np.unique(labels):
        in_class = np.flatnonzero(labels == label)
        class_groups = sorted({int(groups[i]) for i in in_class})
        rng.shuffle(class_groups)
        targets = {"test": test_fraction * len(in_class), "val": val_fraction * len(in_class)}
        counts = {"test": 0, "val": 0}
        fold_sizes = [0] * max(num_folds, 0)
        for group in class_groups:
            members = in_class[groups[in_class] == group]
            fold_of_group = -1
            if targets["test"] - counts["test"] >= len(members) / 2:
                chosen = "test"
            elif num_folds >= 2:
                fold_of_group = int(np.argmin(fold_sizes))
                fold_sizes[fold_of_group] += len(members)
                chosen = "val" if fold_of_group == fold else "train"
            else:
                chosen = "val" if targets["val"] - counts["val"] >= len(members) / 2 else "train"
            counts[chosen] = counts.get(chosen, 0) + len(members)
            for i in members:
                partition[i], folds[i] = chosen, fold_of_group
    return partition, folds


def split_rows(
    files: list[ImageFile], partitions: list[str], folds: list[int], groups: np.ndarray, hashes: list[str]
) -> list[dict]:
    """The rows of ``split.csv``; ``sha256`` of each file's bytes lets a later run detect changed data."""
    return [
        {
            "path": f.path,
            "class": f.class_name,
            "label": f.label,
            "partition": p,
            "fold": k,
            "group": int(g),
            "sha256": h,
        }
        for f, p, k, g, h in zip(files, partitions, folds, groups, hashes, strict=True)
    ]


def data_fingerprint(rows: list[dict]) -> str:
    """SHA-256 over the sorted (path, content hash) pairs: changes when a file is added, removed or edited."""
    listing = "\n".join(f"{r['path']}\t{r['sha256']}" for r in sorted(rows, key=lambda r: r["path"]))
    return hashlib.sha256(listing.encode()).hexdigest()


def partitions_for_fold(rows: list[dict], fold: int) -> list[str]:
    """Re-derive the partitions of a saved cross-validation split for another validation fold."""
    return [
        r["partition"] if r["partition"] == "test" else ("val" if int(r["fold"]) == fold else "train")
        for r in rows
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
