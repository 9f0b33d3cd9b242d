"""Group exact and near-duplicate images so that no scan appears in two partitions.

Identical content (the same bytes, or the same decoded pixels) is always one group. Near-duplicates are
found with a fingerprint that compares structure, not framing or brightness: the image is cropped to its
content, shrunk to a thumbnail and high-pass filtered (so the round shape every head shares does not
count). On the Kaggle set, copies score >= 0.92 and the most similar distinct scans <= 0.87, hence the
default 0.9. On the larger figshare set, distinct scans of one protocol score up to 0.93 across classes,
so near-duplicates link images of one class only (pairs across classes are reported, not grouped), and a
chain of links that would grow a group past ``MAX_GROUP`` images is cut where its links are weakest.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from functools import cache
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageFilter
from scipy.cluster.hierarchy import linkage, to_tree
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import squareform

FINGERPRINT_SIZE = 32
DEFAULT_THRESHOLD = 0.9
MAX_GROUP = 30  # near-duplicate images one group may hold (copies of one scan: any number)
CHUNK = 1024  # similarities a block of rows at a time: memory stays linear in the number of images
PAIRS = 65536  # candidate pairs compared in full at a time
BFLOAT16_SLACK = 0.01  # bound on how far bfloat16 rounding moves a similarity of unit vectors (< 0.006)


def content_fingerprint(gray: Image.Image) -> np.ndarray:
    """A unit vector describing the fine structure of a grayscale image, robust to crop, scale and gain
    (all zeros for an image without structure, such as a uniform one)."""
    small = gray.resize((4 * FINGERPRINT_SIZE, 4 * FINGERPRINT_SIZE), Image.Resampling.BILINEAR)
    pixels = np.asarray(small.filter(ImageFilter.GaussianBlur(2)))  # noise must not move the content box
    ys, xs = np.nonzero(pixels > 0.1 * pixels.max())
    if len(xs):
        small = small.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    thumb = small.resize((FINGERPRINT_SIZE, FINGERPRINT_SIZE), Image.Resampling.BILINEAR)
    blurred = thumb.filter(ImageFilter.GaussianBlur(3))
    detail = np.asarray(thumb, dtype=np.float32) - np.asarray(blurred, dtype=np.float32)
    detail = detail.ravel() - detail.mean()
    norm = np.linalg.norm(detail)
    return detail / norm if norm > 1e-6 else np.zeros_like(detail)


def pixel_hash(gray: Image.Image) -> str:
    """The decoded image's identity: two encodings of the same pixels (a PNG and its BMP) share it."""
    pixels = np.asarray(gray)
    return hashlib.sha256(f"{pixels.shape}{pixels.dtype}".encode() + pixels.tobytes()).hexdigest()


class Grouping(NamedTuple):
    """Duplicate groups (0, 1, ... in order of first member), and what a user should know about them."""

    groups: np.ndarray
    # (i, j, similarity) of images under different classes that look alike: distinct scans of one protocol,
    # or a labelling error; not grouped, listed for a look (near_duplicates.csv)
    across_classes: list[tuple[int, int, float]]
    cut_chains: list[tuple[int, int]]  # (images, largest part) of each chain cut at MAX_GROUP


def similar_pairs(fingerprints: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair i < j whose fingerprints' similarity is at least ``threshold``, with the similarity.

    Exact, in two passes. The first compares all pairs a block of rows at a time, in bfloat16 where
    that is faster (on CPUs with bfloat16 instructions, about twice float32's speed): rounding unit
    vectors to bfloat16 and their product back moves a similarity by less than ``BFLOAT16_SLACK``, so
    every pair that may reach the threshold is kept. The second computes the kept pairs' similarities
    in float32."""
    vectors = torch.from_numpy(np.array(fingerprints, dtype=np.float32))  # a copy: the set's are read-only
    coarse, slack = (vectors.bfloat16(), BFLOAT16_SLACK) if bfloat16_is_faster() else (vectors, 0.0)
    rows, columns, scores = [np.empty(0, dtype=int)], [np.empty(0, dtype=int)], [np.empty(0, np.float32)]
    for start in range(0, len(vectors), CHUNK):
        rough = coarse[start : start + CHUNK] @ coarse[start:].T
        i, j = torch.nonzero(rough >= threshold - slack, as_tuple=True)
        i, j = i[i < j] + start, j[i < j] + start
        score = torch.cat(
            [(vectors[a] * vectors[b]).sum(1) for a, b in zip(i.split(PAIRS), j.split(PAIRS), strict=True)]
            or [torch.empty(0)]
        )
        similar = score >= threshold
        rows.append(i[similar].numpy())
        columns.append(j[similar].numpy())
        scores.append(score[similar].numpy())
    return np.concatenate(rows), np.concatenate(columns), np.concatenate(scores)


@cache
def bfloat16_is_faster() -> bool:
    """Whether this CPU multiplies bfloat16 matrices faster than float32 ones (timed once, briefly):
    without bfloat16 instructions it is emulated, and slower."""
    sample = torch.rand(512, FINGERPRINT_SIZE**2)

    def seconds(matrix: torch.Tensor) -> float:
        matrix @ matrix.T  # warm up
        began = time.perf_counter()
        matrix @ matrix.T
        return time.perf_counter() - began

    return seconds(sample.bfloat16()) < seconds(sample)


def components(count: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the graph of ``count`` nodes and edges (i, j), numbered by first member."""
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(count, count))
    return renumber(connected_components(graph, directed=False)[1])


def same_content_links(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Edges from each image to the first image with the same key (its decoded pixels' hash)."""
    first: dict[str, int] = {}
    i, j = [], []
    for index, key in enumerate(keys):
        if key in first:
            i.append(first[key])
            j.append(index)
        else:
            first[key] = index
    return np.array(i, dtype=int), np.array(j, dtype=int)


def duplicate_groups(
    fingerprints: np.ndarray,
    labels: np.ndarray,
    content_keys: list[str],
    threshold: float = DEFAULT_THRESHOLD,
) -> Grouping:
    """Identical content (the same ``content_keys``: byte copies and re-encodings of the same pixels) is
    one group, across classes too (which the split then refuses); near-duplicates of one class (similarity
    >= ``threshold``) are linked, and a group of linked near-duplicates larger than ``MAX_GROUP`` is cut
    into parts at the lowest higher similarity that keeps each part within it."""
    count = len(fingerprints)
    labels = np.asarray(labels)
    same_i, same_j = same_content_links(content_keys)
    i, j, score = similar_pairs(fingerprints, threshold)
    across = labels[i] != labels[j]
    across_classes = [
        (int(a), int(b), float(s)) for a, b, s in zip(i[across], j[across], score[across], strict=True)
    ]
    i, j, score = i[~across], j[~across], score[~across]
    groups = components(count, np.concatenate([same_i, i]), np.concatenate([same_j, j]))
    cut_chains = []
    sizes = np.bincount(groups)
    for oversized in np.flatnonzero(sizes > MAX_GROUP):
        members = np.flatnonzero(groups == oversized)
        parts = cut_chain(members, count, (i, j, score), (same_i, same_j))
        if parts is None or not parts.any():  # copies of one scan: any number stay one group
            continue
        groups[members] = groups.max() + 1 + parts
        cut_chains.append((len(members), int(np.bincount(parts).max())))
    return Grouping(renumber(groups), across_classes, cut_chains)


def cut_chain(
    members: np.ndarray,
    count: int,
    near: tuple[np.ndarray, np.ndarray, np.ndarray],
    same: tuple[np.ndarray, np.ndarray],
) -> np.ndarray | None:
    """Part of each member (0, 1, ...) of a linked group too large to be one scan: the largest clusters of
    at most ``MAX_GROUP`` images in the single-linkage tree of its links (``near``: i, j, similarity), so
    the closest look-alikes stay together; copies of one scan (``same``) are never cut apart. None when
    the group holds no near-duplicate link."""
    position = np.full(count, -1)  # of each image in ``members``; -1: not a member
    position[members] = np.arange(len(members))

    def within(i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        inside = (position[i] >= 0) & (position[j] >= 0)
        return position[i[inside]], position[j[inside]], inside

    near_i, near_j, inside = within(near[0], near[1])
    if not len(near_i):
        return None
    copy_i, copy_j, _ = within(*same)
    distance = np.full((len(members), len(members)), 2.0)  # not linked: farther than any link
    np.fill_diagonal(distance, 0.0)
    distance[near_i, near_j] = distance[near_j, near_i] = 1.0 - near[2][inside]
    distance[copy_i, copy_j] = distance[copy_j, copy_i] = 0.0
    tree = to_tree(linkage(squareform(distance, checks=False), method="single"))
    parts = np.empty(len(members), dtype=int)
    clusters, found = [tree], 0
    while clusters:  # top down: a cluster small enough, or of copies only, is one part
        cluster = clusters.pop()
        if cluster.is_leaf() or cluster.get_count() <= MAX_GROUP or cluster.dist <= 0.0:
            parts[cluster.pre_order()] = found
            found += 1
        else:
            clusters += [cluster.get_right(), cluster.get_left()]
    return renumber(parts)


def renumber(groups: np.ndarray) -> np.ndarray:
    """Group ids 0, 1, ... in order of each group's first member."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.empty(len(first), dtype=int)
    order[np.argsort(first)] = np.arange(len(first))
    return order[inverse]


def join_given_groups(detected: np.ndarray, given: list[str]) -> tuple[np.ndarray, list[list[int]]]:
    """Groups that keep every given group (a patient or study) whole, with the detected copies joined to
    it; and the detected groups whose images the given groups put in more than one group (a copy shared by
    two patients: their groups become one), as lists of image positions."""
    count = len(given)
    first_of: dict[str, int] = {}
    by_given = np.array([first_of.setdefault(name, i) for i, name in enumerate(given)], dtype=int)
    merged = components(
        count,
        np.concatenate([np.arange(count), np.arange(count)]),
        np.concatenate([by_given, first_member(detected)]),
    )
    names: dict[int, set[str]] = defaultdict(set)
    members: dict[int, list[int]] = defaultdict(list)
    for position, (group, name) in enumerate(zip(detected.tolist(), given, strict=True)):
        names[group].add(name)
        members[group].append(position)
    return merged, [members[group] for group in names if len(names[group]) > 1]


def first_member(groups: np.ndarray) -> np.ndarray:
    """For each image, the position of the first image of its group."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    return first[inverse]
