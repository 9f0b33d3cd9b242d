"""Group exact and near-duplicate images so that no scan appears in two partitions.

The Kaggle set holds byte-identical copies, re-encoded copies and resized or annotated copies of one scan.
A fingerprint compares structure, not framing or brightness: the image is cropped to its content,
shrunk to a thumbnail and high-pass filtered (so the round shape every head shares does not count).
On the real set, copies score >= 0.92 and the most similar distinct scans <= 0.87, hence the default 0.9.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

FINGERPRINT_SIZE = 32
DEFAULT_THRESHOLD = 0.9


def content_fingerprint(gray: Image.Image) -> np.ndarray:
    """A unit vector describing the fine structure of a grayscale image, robust to crop, scale and gain."""
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


def duplicate_groups(fingerprints: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Group ids (0, 1, ... in order of first member): the connected components of the graph that links
    every pair with similarity >= threshold (so a chain of copies is one group)."""
    count = len(fingerprints)
    rows, columns = [np.empty(0, dtype=int)], [np.empty(0, dtype=int)]
    chunk = 1024  # similarities a block of rows at a time: memory stays linear in the number of images
    for start in range(0, count, chunk):
        i, j = np.nonzero(fingerprints[start : start + chunk] @ fingerprints.T >= threshold)
        rows.append(i + start)
        columns.append(j)
    links = (np.concatenate(rows), np.concatenate(columns))
    graph = coo_matrix((np.ones(len(links[0])), links), shape=(count, count))
    _, components = connected_components(graph, directed=False)
    _, first = np.unique(components, return_index=True)  # number the groups by their first member
    order = np.empty(len(first), dtype=int)
    order[np.argsort(first)] = np.arange(len(first))
    return order[components]
