"""Stage 2, the index: every readable image of a folder decoded once (pixels at the training size,
fingerprint, content hash) and grouped with its duplicates. The decode cache lets later runs and the other
jobs of a sweep skip decoding."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

from brain_mri.atomic import atomic_path
from brain_mri.data.duplicates import (
    DEFAULT_THRESHOLD,
    MAX_GROUP,
    content_fingerprint,
    duplicate_groups,
    join_given_groups,
    pixel_hash,
)
from brain_mri.data.folder import (
    ImageFile,
    class_names_of,
    discover_classes,
    image_header,
    is_broken_link,
    scan_image_files,
    scan_sources,
    unreadable_reason,
)
from brain_mri.data.manifest import Manifest
from brain_mri.data.preprocessing import PREPROCESSING_VERSION, model_pixels, read_grayscale
from brain_mri.errors import BrainMRIError

log = logging.getLogger(__name__)


class DecodeCache:
    """Decoded images on disk, one entry per (file content, image size, crop, preprocessing version).

    Every job of a sweep and every later run reads the entries instead of decoding again; a changed file
    has a new content hash and so a new entry. Entries are written atomically, so parallel jobs can share
    the folder. The cache is disposable: an entry that does not read is a miss (counted in ``damaged``,
    decoded again and rewritten), and a folder that cannot be written turns the cache off with a warning.
    """

    def __init__(self, folder: Path, image_size: int, crop: str = "none"):
        cropped = "" if crop == "none" else f"-{crop}"
        self.folder = Path(folder) / f"v{PREPROCESSING_VERSION}-{image_size}px{cropped}"
        self.damaged = 0
        self.writable = True

    def _path(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / f"{sha256}.npz"

    def get(self, sha256: str) -> tuple[tuple[np.ndarray, np.ndarray, str] | None, bool]:
        """The entry of a file content (None: not there, or unreadable), and whether it was damaged (the
        caller counts those in ``damaged``: a worker process's count would be lost)."""
        path = self._path(sha256)
        try:
            with np.load(path) as entry:
                if "pixel_hash" not in entry:  # written before decoded pixels were compared: decode again
                    return None, False
                return (entry["pixels"], entry["fingerprint"], str(entry["pixel_hash"])), False
        except FileNotFoundError:
            return None, False
        except Exception:  # cut off, empty, not a zip, unreadable: np.load raises many kinds
            return None, path.exists()

    def put(self, sha256: str, pixels: np.ndarray, fingerprint: np.ndarray, decoded: str) -> None:
        if not self.writable:
            return
        try:
            with atomic_path(self._path(sha256)) as temporary:
                np.savez(temporary, pixels=pixels, fingerprint=fingerprint, pixel_hash=np.array(decoded))
        except OSError as err:
            self.writable = False
            log.warning("Cannot write the decode cache in %s (%s); running without it.", self.folder, err)


@dataclass
class ImageIndex:
    """The readable images of a folder, in scan order, and what could not be read."""

    root: Path
    class_names: list[str]
    files: list[ImageFile]
    pixels: np.ndarray  # (N, size, size) uint8
    fingerprints: np.ndarray  # (N, D) float32
    sha256: list[str]
    pixel_hashes: list[str]  # of the decoded image: the same for re-encodings of the same pixels
    groups: np.ndarray  # duplicate group of each image (with a manifest's groups: kept whole)
    # (path, class, path, class, similarity): look-alikes under different classes, not grouped
    near_duplicates: list[tuple[str, str, str, str, float]] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): unreadable
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, what to know): read, with a warning
    fresh: list[int] = field(default_factory=list)  # decoded now, not taken from the cache
    sources: list[str] | None = None  # where each image comes from (a manifest's source column)

    def save_to(self, cache: DecodeCache) -> None:
        """Write the freshly decoded images to the cache (done by one process per machine, not by all)."""
        for i in self.fresh:
            cache.put(self.sha256[i], self.pixels[i], self.fingerprints[i], self.pixel_hashes[i])
        self.fresh = []


def list_files(
    root: Path,
    class_names: list[str] | None = None,
    class_map: dict[str, str] | None = None,
    manifest: Manifest | None = None,
    sources: list[str] | None = None,
) -> tuple[list[ImageFile], dict[str, str] | None]:
    """The data set's files, before anything is decoded (a manifest's, each source folder's, or the class
    folders'), and each file's source when there are sources."""
    if manifest:
        return manifest.files, manifest.sources
    if sources:
        return scan_sources(root, sources, class_names, class_map)
    return scan_image_files(root, class_names, class_map), None


def build_index(
    root: Path,
    image_size: int,
    class_names: list[str] | None = None,
    class_map: dict[str, str] | None = None,
    min_size: int = 1,
    cache: DecodeCache | None = None,
    duplicate_threshold: float = DEFAULT_THRESHOLD,
    crop: str = "none",
    manifest: Manifest | None = None,
    sources: list[str] | None = None,
) -> ImageIndex:
    """Scan ``root`` (labels by ``class_names`` when given, else the sorted folders), decode every file
    once (or take it from ``cache``, which is read here, never written) and group the duplicates.
    Pixels are cropped (``crop="brain"``) before resizing; duplicates are found on the uncropped images,
    so the split does not depend on the crop."""
    files, source_of = list_files(root, class_names, class_map, manifest, sources)
    readable, pixels, prints, hashes, decoded, bad, notes, fresh = decode_files(
        root, files, image_size, cache, min_size, crop
    )
    log.info(
        "Read %d files: %d decoded, %d from the cache", len(files), len(fresh), len(readable) - len(fresh)
    )
    if cache is not None and cache.damaged:
        log.warning("%d damaged decode-cache entries were decoded again and rewritten.", cache.damaged)
    if notes:
        listing = "\n".join(f"  {path}: {note}" for path, note in notes)
        log.warning("%d image(s) to know about:\n%s", len(notes), listing)
    names = list(class_names or (class_names_of(files) if manifest or sources else discover_classes(root)))
    labels = np.array([item.label for item in readable])
    grouping = duplicate_groups(prints, labels, decoded, duplicate_threshold)
    groups = grouping.groups
    if manifest and manifest.groups:
        groups, shared = join_given_groups(groups, [manifest.groups[item.path] for item in readable])
        for copies in shared:
            given = sorted({manifest.groups[readable[i].path] for i in copies})
            log.warning(
                "Copies of one scan are listed under the groups %s (%s): those groups are kept together.",
                ", ".join(given),
                ", ".join(readable[i].path for i in copies),
            )
    for images, largest in grouping.cut_chains:
        log.warning(
            "%d images of one class were linked as near-duplicates in a chain; cut where its links are "
            "weakest into groups of at most %d (the most one group may hold: %d): distinct scans of one "
            "protocol look alike.",
            images,
            largest,
            MAX_GROUP,
        )
    near = [
        (readable[a].path, names[readable[a].label], readable[b].path, names[readable[b].label], score)
        for a, b, score in grouping.across_classes
    ]
    if near:
        log.warning(
            "%d pairs of images under different classes look alike (similarity >= %s), e.g. %s and %s "
            "(%.3f): distinct scans, or a labelling error to check; they are not grouped (listed in the "
            "run's near_duplicates.csv).",
            len(near),
            duplicate_threshold,
            near[0][0],
            near[0][2],
            near[0][4],
        )
    from_source = [source_of[item.path] for item in readable] if source_of else None
    return ImageIndex(
        root, names, readable, pixels, prints, hashes, decoded, groups, near, bad, notes, fresh, from_source
    )


POOL_FROM = 256  # files from which reading and decoding is spread over every core


class FileRead(NamedTuple):
    """What reading one file gave: its hash and entry (pixels, fingerprint, pixel hash), or why it is
    unreadable; a note to show; whether it was decoded now (not found in the cache); a damaged cache entry."""

    sha256: str = ""
    entry: tuple[np.ndarray, np.ndarray, str] | None = None
    bad: str | None = None
    note: str | None = None
    fresh: bool = False
    damaged: bool = False


def read_file(path: Path, image_size: int, crop: str, min_size: int, cache: DecodeCache | None) -> FileRead:
    """Read one file: hash its bytes, then take its pixels and fingerprint from the cache, or decode it
    (in a worker process of the pool, or in this one). Nothing is written to the cache here."""
    try:
        content = path.read_bytes()
    except OSError as err:
        return FileRead(bad=f"a broken symbolic link ({err.strerror})" if is_broken_link(path) else str(err))
    sha256 = hashlib.sha256(content).hexdigest()
    try:
        width, height, frames = image_header(content)
    except Exception as err:  # PIL raises many types for broken files; each is reported, none fatal
        return FileRead(bad=unreadable_reason(content, err))
    if min(width, height) < min_size:
        return FileRead(bad=f"too small: {width}x{height} pixels (data.min_image_size={min_size})")
    note = f"{frames} frames; only the first is used" if frames > 1 else None
    entry, damaged = cache.get(sha256) if cache else (None, False)
    if entry is not None:
        return FileRead(sha256, entry, note=note, damaged=damaged)
    try:
        gray = read_grayscale(io.BytesIO(content))
    except Exception as err:
        return FileRead(bad=unreadable_reason(content, err))
    entry = (model_pixels(gray, image_size, crop), content_fingerprint(gray), pixel_hash(gray))
    return FileRead(sha256, entry, note=note, fresh=True, damaged=damaged)


def decode_files(
    root: Path,
    files: list[ImageFile],
    image_size: int,
    cache: DecodeCache | None = None,
    min_size: int = 1,
    crop: str = "none",
    workers: int | None = None,
) -> tuple:
    """Read every file once (:func:`read_file`): from ``POOL_FROM`` files on, in a process per core
    (``workers``: how many; 1 reads here), in the files' order either way.

    Unreadable files (truncated, empty, not an image, DICOM, too large to decode safely, a shorter side
    below ``min_size`` pixels) are collected with their reasons, never raised one by one, so a user sees
    all of them at once. Images with several frames (animated GIF, multi-page TIFF) are read from their
    first frame and noted.
    """
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if len(files) >= POOL_FROM else 1
    read = partial(read_file, image_size=image_size, crop=crop, min_size=min_size, cache=cache)
    paths = [root / item.path for item in files]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(read, paths, chunksize=max(1, len(paths) // (8 * workers))))
    else:
        results = [read(path) for path in paths]
    readable: list[ImageFile] = []
    entries = []
    hashes: list[str] = []
    bad: list[tuple[str, str]] = []
    fresh: list[int] = []
    notes: list[tuple[str, str]] = []
    for item, result in zip(files, results, strict=True):
        if cache is not None:
            cache.damaged += result.damaged
        if result.bad is not None:
            bad.append((item.path, result.bad))
            continue
        if result.note:
            notes.append((item.path, result.note))
        if result.fresh:
            fresh.append(len(readable))
        assert result.entry is not None
        readable.append(item)
        hashes.append(result.sha256)
        entries.append(result.entry)
    if not readable:
        raise BrainMRIError(f"None of the {len(files)} files under {root} can be read as an image.")
    pixels = np.stack([entry[0] for entry in entries])
    prints = np.stack([entry[1] for entry in entries])
    return readable, pixels, prints, hashes, [entry[2] for entry in entries], bad, notes, fresh
