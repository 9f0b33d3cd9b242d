"""Stage 3, the split: partitions of an index, made by a pure function or taken from a saved split after
checking that it still describes the same images. Every duplicate group lies in exactly one partition."""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brain_mri.data.folder import ImageFile
from brain_mri.data.index import ImageIndex
from brain_mri.errors import BrainMRIError
from brain_mri.runs.files import read_csv, write_csv

log = logging.getLogger(__name__)

PARTITIONS = ("train", "val", "test")


def check_groups_have_one_class(files: list[ImageFile], groups: np.ndarray) -> None:
    """The same image under two classes is a labelling error that no split can fix: name every copy.
    (Only identical content groups across classes; look-alikes are listed in near_duplicates.csv.)"""
    members = defaultdict(list)
    for item, group in zip(files, groups, strict=True):
        members[group].append(item)
    conflicts = [m for m in members.values() if len({item.label for item in m}) > 1]
    if conflicts:
        lines = ["  " + ", ".join(item.path for item in m) for m in conflicts]
        raise BrainMRIError(
            "The same image appears under more than one class (identical pixels):\n"
            + "\n".join(lines)
            + "\nKeep each under its true class, and remove the others."
        )


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
        by_group = defaultdict(list)  # members of each group, found in one pass (not one per group)
        for i in in_class.tolist():
            by_group[int(groups[i])].append(i)
        class_groups = sorted(by_group)
        rng.shuffle(class_groups)
        targets = {"test": test_fraction * len(in_class), "val": val_fraction * len(in_class)}
        counts = {"test": 0, "val": 0}
        fold_sizes = [0] * max(num_folds, 0)
        for group in class_groups:
            members = by_group[group]
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


@dataclass
class Split:
    """Which images of an index are used, in which order, and the partition, fold and group of each."""

    order: list[int]  # positions in the index
    partitions: list[str]
    folds: list[int]
    groups: np.ndarray


def make_split(
    index: ImageIndex,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    num_folds: int = 0,
    fold: int = 0,
    holdout_source: str | None = None,
    split_by: str = "group",
) -> Split:
    """A new grouped, stratified split of every image of the index (see :func:`grouped_stratified_split`);
    with ``holdout_source``, that source is the test partition and the others are split into training
    and validation (``test_fraction`` unused). ``split_by="image"`` ignores the groups (each image is its
    own): the random split whose leak the grouping removes, for comparison only."""
    check_groups_have_one_class(index.files, index.groups)
    labels = np.array([f.label for f in index.files])
    groups = index.groups if split_by == "group" else np.arange(len(labels))
    if split_by != "group" and len(set(index.groups.tolist())) < len(labels):
        log.warning(
            "data.split_by=image: the %d images of %d groups are split one by one, so copies and slices "
            "of one scan or patient can fall on both sides and lift the metrics (for comparison only).",
            len(labels),
            len(set(index.groups.tolist())),
        )
    if holdout_source is None:
        partitions, folds = grouped_stratified_split(
            labels, groups, val_fraction, test_fraction, seed, num_folds, fold
        )
        return Split(list(range(len(index.files))), partitions, folds, groups)
    held = held_out(index, holdout_source)
    rest = np.flatnonzero(~held)
    rest_partitions, rest_folds = grouped_stratified_split(
        labels[rest], groups[rest], val_fraction, 0.0, seed, num_folds, fold
    )
    partitions, folds = ["test"] * len(labels), [-1] * len(labels)
    for position, partition, k in zip(rest, rest_partitions, rest_folds, strict=True):
        partitions[position], folds[position] = partition, k
    return Split(list(range(len(index.files))), partitions, folds, groups)


def held_out(index: ImageIndex, source: str) -> np.ndarray:
    """Which images the test partition holds when ``source`` is held out: all of its images, and any
    copy of them from another source (a scan is never on both sides). The source must exist and have
    every class, which its test metrics need."""
    if index.sources is None:
        raise BrainMRIError(
            f"data.holdout_source={source}, but the images have no source: list them in a data.manifest "
            "with a source column, or put each source's class folders in its own folder (data.sources=[...])."
        )
    sources = np.array(index.sources)
    if source not in set(index.sources):
        raise BrainMRIError(
            f"data.holdout_source={source} is none of the sources: {', '.join(sorted(set(index.sources)))}."
        )
    labels = np.array([f.label for f in index.files])
    lacking = [
        name for label, name in enumerate(index.class_names) if not np.any(labels[sources == source] == label)
    ]
    if lacking:
        raise BrainMRIError(
            f"data.holdout_source={source} has no images of {', '.join(lacking)}: its test metrics need "
            "every class. Hold out another source."
        )
    held = np.isin(index.groups, index.groups[sources == source])
    others = sorted(set(sources[held]) - {source})
    if others:
        log.warning(
            "%d images of %s are copies of held-out scans: they are tested with %s, not trained on.",
            int(np.sum(held & (sources != source))),
            ", ".join(others),
            source,
        )
    return held


def load_split(index: ImageIndex, rows: list[dict], source: str, num_folds: int = 0, fold: int = 0) -> Split:
    """Reuse a saved split exactly: the same files with the same contents and classes, partitions, folds
    and groups (with ``num_folds``, fold ``fold`` becomes the validation partition). Anything else stops."""
    position = {f.path: i for i, f in enumerate(index.files)}
    missing = [r["path"] for r in rows if r["path"] not in position]
    changed = [
        r["path"] for r in rows if r["path"] in position and index.sha256[position[r["path"]]] != r["sha256"]
    ]
    if missing or changed:
        raise BrainMRIError(
            f"The images under {index.root} no longer match the split {source}: "
            f"{len(missing)} missing, {len(changed)} changed since it was written "
            f"({', '.join((missing + changed)[:10])}). Refusing to use a different set of images."
        )
    order = [position[r["path"]] for r in rows]
    relabelled = [
        r["path"] for r, i in zip(rows, order, strict=True) if int(r["label"]) != index.files[i].label
    ]
    if relabelled:
        raise BrainMRIError(
            f"The split {source} gives other classes than the folders for: " + ", ".join(relabelled[:10])
        )
    folds = [int(r["fold"]) for r in rows]
    partitions = [r["partition"] for r in rows]
    if num_folds:
        if max(folds) + 1 != num_folds:
            raise BrainMRIError(
                f"The split {source} has {max(folds) + 1} folds, not data.num_folds={num_folds}."
            )
        partitions = partitions_for_fold(rows, fold)
    return Split(order, partitions, folds, np.array([int(r["group"]) for r in rows]))


def split_rows(index: ImageIndex, split: Split) -> list[dict]:
    """The rows of ``split.csv``; ``sha256`` of each file's bytes lets a later run detect changed data."""
    return [
        {
            "path": index.files[i].path,
            "class": index.files[i].class_name,
            "label": index.files[i].label,
            "partition": p,
            "fold": k,
            "group": int(g),
            "sha256": index.sha256[i],
        }
        | ({"source": index.sources[i]} if index.sources else {})
        for i, p, k, g in zip(split.order, split.partitions, split.folds, split.groups, strict=True)
    ]


def data_fingerprint(rows: list[dict]) -> str:
    """SHA-256 over the sorted (path, class, content hash) rows: changes when a file is added, removed,
    edited or labelled otherwise (runs on relabelled data are another data set)."""
    listing = "\n".join(
        f"{r['path']}\t{r['class']}\t{r['sha256']}" for r in sorted(rows, key=lambda r: r["path"])
    )
    return hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest()


def partitions_for_fold(rows: list[dict], fold: int) -> list[str]:
    """Re-derive the partitions of a saved cross-validation split for another validation fold."""
    return [
        r["partition"] if r["partition"] == "test" else ("val" if int(r["fold"]) == fold else "train")
        for r in rows
    ]


SPLIT_FIELDS = ("path", "class", "label", "partition", "fold", "group", "sha256")  # split.csv's columns


def write_split(path: Path, rows: list[dict]) -> None:
    """``split.csv``; with the source of each image when the images have sources."""
    write_csv(path, rows, SPLIT_FIELDS + (("source",) if rows and "source" in rows[0] else ()))


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
