"""Stage 2, the index: every readable image of a folder decoded once (pixels at the training size,
fingerprint, content hash) and grouped with its duplicates. The decode cache lets later runs and the other
jobs of a sweep skip decoding."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

from brain_mri.atomic import atomic_path
from brain_mri.data.duplicates import (
    DEFAULT_THRESHOLD,
    FINGERPRINT_SIZE,
    MAX_GROUP,
    Grouping,
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


PIXELS, FINGERPRINTS = ".npy", ".fingerprints.npy"  # a decoded set's two arrays, beside its listing


class StoredSet(NamedTuple):
    """What a decoded set holds: per image its content hash, pixels (mapped, not read), fingerprint,
    decoded-pixel hash and (width, height, frames); and the duplicate grouping last made of them."""

    sha256: list[str]
    pixels: np.ndarray
    fingerprints: np.ndarray
    pixel_hashes: list[str]
    sizes: np.ndarray
    grouping_key: str
    grouping: Grouping


class DecodedSet:
    """The decoded images of one data folder at one image size, crop and preprocessing version.

    Pixels live in one ``.npy`` file that every process maps read-only (sweep jobs, DDP ranks, loader
    workers): the page cache holds them once per machine, not once per process. Beside it, each image's
    content hash, fingerprint and decoded-pixel hash let a later run decode only files whose content
    changed, and the grouping of the last run is kept for the same images and threshold. Files are
    replaced atomically, so parallel jobs can share the folder. The set is disposable: one that does not
    read is decoded again and rewritten (``damaged``), and a folder that cannot be written turns it off
    with a warning.
    """

    def __init__(self, folder: Path, root: Path, image_size: int, crop: str = "none"):
        cropped = "" if crop == "none" else f"-{crop}"
        self.folder = Path(folder) / f"v{PREPROCESSING_VERSION}-{image_size}px{cropped}"
        self.name = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
        self.image_size = image_size
        self.damaged = False
        self.writable = True

    @property
    def listing(self) -> Path:
        return self.folder / f"{self.name}.npz"

    def load(self) -> StoredSet | None:
        """The stored set (None: not there, or damaged, which sets ``damaged``)."""
        try:
            with np.load(self.listing) as listing:
                stored = {key: listing[key] for key in listing.files}
            pixels, fingerprints = self._mapped(str(stored["arrays"]), len(stored["sha256"]))
            if [checksum(pixels), checksum(fingerprints)] != stored["checksums"].tolist():
                raise ValueError("the arrays were changed after they were written")  # bit rot, an edit
        except (FileNotFoundError, NotADirectoryError):  # not there (or the folder is a file: said on write)
            return None
        except Exception:  # cut off, empty, not a zip, unreadable: np.load raises many kinds
            self.damaged = True
            return None
        grouping = Grouping(
            stored["groups"],
            [(int(a), int(b), float(score)) for a, b, score in stored["across_classes"]],
            [(int(images), int(largest)) for images, largest in stored["cut_chains"]],
        )
        return StoredSet(
            stored["sha256"].tolist(),
            pixels,
            fingerprints,
            stored["pixel_hashes"].tolist(),
            stored["sizes"],
            str(stored["grouping_key"]),
            grouping,
        )

    def save(self, index: ImageIndex) -> tuple[np.ndarray, np.ndarray] | None:
        """Write the index's images and grouping as this folder's set; returns its pixels and fingerprints
        mapped from the written files (to use instead of the copies in memory), or None when it cannot be
        written."""
        if not self.writable:
            return None
        arrays = f"{self.name}-{content_key(index.sha256)[:16]}"  # named by content: shared by groupings
        checksums = [checksum(index.pixels), checksum(index.fingerprints)]
        try:
            try:  # the same images in the same order, written before and whole: kept
                kept = self._mapped(arrays, len(index.sha256))
                if [checksum(values) for values in kept] != checksums:
                    raise ValueError("changed")
            except Exception:
                for suffix, values in ((PIXELS, index.pixels), (FINGERPRINTS, index.fingerprints)):
                    with atomic_path(self.folder / f"{arrays}{suffix}") as temporary:
                        np.save(temporary, np.ascontiguousarray(values))
            with atomic_path(self.listing) as temporary:
                np.savez(
                    temporary,
                    arrays=np.array(arrays),
                    checksums=np.array(checksums, dtype=np.int64),
                    sha256=np.array(index.sha256),
                    pixel_hashes=np.array(index.pixel_hashes),
                    sizes=index.sizes,
                    grouping_key=np.array(index.grouping_key),
                    groups=index.grouping.groups,
                    across_classes=np.array(index.grouping.across_classes, dtype=float).reshape(-1, 3),
                    cut_chains=np.array(index.grouping.cut_chains, dtype=int).reshape(-1, 2),
                )
        except (OSError, BrainMRIError) as err:  # unwritable, or a full disk: the cache is disposable
            self.writable = False
            log.warning("Cannot write the decode cache in %s (%s); running without it.", self.folder, err)
            return None
        for older in self.folder.glob(f"{self.name}-*.npy"):  # mapped elsewhere: unlinking keeps the pages
            if not older.name.startswith(arrays):
                older.unlink(missing_ok=True)
        return self._mapped(arrays, len(index.sha256))

    def _mapped(self, arrays: str, count: int) -> tuple[np.ndarray, np.ndarray]:
        """A set's pixels and fingerprints, mapped read-only (pages are read when used); raises unless
        they hold ``count`` whole images."""
        pixels = np.load(self.folder / f"{arrays}{PIXELS}", mmap_mode="r")
        fingerprints = np.load(self.folder / f"{arrays}{FINGERPRINTS}", mmap_mode="r")
        expected = {
            PIXELS: (pixels, (count, self.image_size, self.image_size), np.uint8),
            FINGERPRINTS: (fingerprints, (count, FINGERPRINT_SIZE**2), np.float32),
        }
        for suffix, (values, shape, dtype) in expected.items():
            if values.shape != shape or values.dtype != dtype:
                raise ValueError(f"{arrays}{suffix} holds an array of shape {values.shape}, {values.dtype}")
        return pixels, fingerprints


def content_key(sha256: list[str]) -> str:
    """One hash for a list of file contents, in order."""
    return hashlib.sha256("\n".join(sha256).encode()).hexdigest()


def checksum(values: np.ndarray) -> int:
    """CRC-32 of an array's bytes, a block at a time (about 0.3 s per GB): a changed byte is seen."""
    flat = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
    crc = 0
    for start in range(0, len(flat), 1 << 26):
        crc = zlib.crc32(flat[start : start + (1 << 26)].data, crc)
    return crc


@dataclass
class ImageIndex:
    """The readable images of a folder, in scan order, and what could not be read."""

    root: Path
    class_names: list[str]
    files: list[ImageFile]
    pixels: np.ndarray  # (N, size, size) uint8; mapped from the decoded set when there is one
    fingerprints: np.ndarray  # (N, D) float32
    sha256: list[str]
    pixel_hashes: list[str]  # of the decoded image: the same for re-encodings of the same pixels
    sizes: np.ndarray  # (N, 3): width, height and frames of each file
    grouping: Grouping  # duplicate groups (before a manifest's groups join them)
    grouping_key: str  # what the grouping depends on: contents, classes and threshold
    groups: np.ndarray  # duplicate group of each image (with a manifest's groups: kept whole)
    # (path, class, path, class, similarity): look-alikes under different classes, not grouped
    near_duplicates: list[tuple[str, str, str, str, float]] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): unreadable
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, what to know): read, with a warning
    stored: bool = False  # the decoded set holds exactly these images and this grouping
    sources: list[str] | None = None  # where each image comes from (a manifest's source column)

    def save_to(self, store: DecodedSet) -> None:
        """Write the decoded set (done by one process per machine, not by all), then read the pixels
        from it: the copy decoded in memory is let go, and this process shares the others' pages."""
        if self.stored:
            return
        mapped = store.save(self)
        if mapped is not None:
            (self.pixels, self.fingerprints), self.stored = mapped, True


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
    store: DecodedSet | None = None,
    duplicate_threshold: float = DEFAULT_THRESHOLD,
    crop: str = "none",
    manifest: Manifest | None = None,
    sources: list[str] | None = None,
) -> ImageIndex:
    """Scan ``root`` (labels by ``class_names`` when given, else the sorted folders), decode every file
    once (or take it from the decoded set ``store``, which is read here, never written) and group the
    duplicates. Pixels are cropped (``crop="brain"``) before resizing; duplicates are found on the
    uncropped images, so the split does not depend on the crop."""
    files, source_of = list_files(root, class_names, class_map, manifest, sources)
    stored = store.load() if store is not None else None
    if store is not None and store.damaged:
        log.warning("The decode cache %s is damaged: decoding again and rewriting it.", store.listing)
    decoded = decode_files(root, files, image_size, stored, min_size, crop)
    log.info(
        "Read %d files: %d decoded, %d from the cache",
        len(files),
        decoded.fresh,
        len(decoded.readable) - decoded.fresh,
    )
    if decoded.notes:
        listing = "\n".join(f"  {path}: {note}" for path, note in decoded.notes)
        log.warning("%d image(s) to know about:\n%s", len(decoded.notes), listing)
    readable = decoded.readable
    names = list(class_names or (class_names_of(files) if manifest or sources else discover_classes(root)))
    labels = np.array([item.label for item in readable])
    key = hashlib.sha256(
        f"{content_key(decoded.sha256)} {labels.tolist()} {duplicate_threshold}".encode()
    ).hexdigest()
    if stored is not None and stored.grouping_key == key:
        grouping = stored.grouping
    else:
        log.info(
            "Finding duplicates among %d images (similarity >= %s) ...", len(readable), duplicate_threshold
        )
        began = time.perf_counter()
        grouping = duplicate_groups(decoded.fingerprints, labels, decoded.pixel_hashes, duplicate_threshold)
        log.info(
            "%d duplicate groups found in %.1f s",
            len(np.unique(grouping.groups)),
            time.perf_counter() - began,
        )
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
    return ImageIndex(
        root,
        names,
        readable,
        decoded.pixels,
        decoded.fingerprints,
        decoded.sha256,
        decoded.pixel_hashes,
        decoded.sizes,
        grouping,
        key,
        groups,
        near,
        decoded.bad,
        decoded.notes,
        stored=decoded.whole_set and stored is not None and stored.grouping_key == key,
        sources=[source_of[item.path] for item in readable] if source_of else None,
    )


POOL_FROM = 256  # files from which reading and decoding is spread over every core


class FileRead(NamedTuple):
    """What reading one file gave: its hash and entry (pixels, fingerprint, pixel hash), its width,
    height and frames, or why it is unreadable."""

    sha256: str = ""
    entry: tuple[np.ndarray, np.ndarray, str] | None = None
    size: tuple[int, int, int] = (0, 0, 0)
    bad: str | None = None


def read_file(path: Path, image_size: int, crop: str, min_size: int) -> FileRead:
    """Read one file: hash its bytes and decode it (in a worker process of the pool, or in this one)."""
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
    try:
        gray = read_grayscale(io.BytesIO(content))
    except Exception as err:
        return FileRead(bad=unreadable_reason(content, err))
    entry = (model_pixels(gray, image_size, crop), content_fingerprint(gray), pixel_hash(gray))
    return FileRead(sha256, entry, (width, height, frames))


def hash_file(path: Path) -> str | None:
    """The sha256 of a file's bytes; None when it cannot be read (reading it again says why)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Decoded(NamedTuple):
    """The readable files, in order, with what :func:`read_file` gives for each; the unreadable ones."""

    readable: list[ImageFile]
    pixels: np.ndarray
    fingerprints: np.ndarray
    sha256: list[str]
    pixel_hashes: list[str]
    sizes: np.ndarray
    bad: list[tuple[str, str]]
    notes: list[tuple[str, str]]
    fresh: int  # decoded now, not taken from the decoded set
    whole_set: bool  # every image from the decoded set, in its order: ``pixels`` is its mapping


def decode_files(
    root: Path,
    files: list[ImageFile],
    image_size: int,
    stored: StoredSet | None = None,
    min_size: int = 1,
    crop: str = "none",
    workers: int | None = None,
) -> Decoded:
    """Read every file once: a file whose content the decoded set ``stored`` holds is only hashed, the
    others are decoded (:func:`read_file`); from ``POOL_FROM`` files on, in a process per core
    (``workers``: how many; 1 reads here), in the files' order either way.

    Unreadable files (truncated, empty, not an image, DICOM, too large to decode safely, a shorter side
    below ``min_size`` pixels) are collected with their reasons, never raised one by one, so a user sees
    all of them at once. Images with several frames (animated GIF, multi-page TIFF) are read from their
    first frame and noted.
    """
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if len(files) >= POOL_FROM else 1
    paths = [root / item.path for item in files]
    rows: list[int | None] = [None] * len(files)  # each file's row in the decoded set, if it is there
    if stored is not None:
        row_of = {sha: row for row, sha in enumerate(stored.sha256)}
        for position, sha in enumerate(map_in_pool(hash_file, paths, workers)):
            row = row_of.get(sha) if sha else None
            if row is not None and min(stored.sizes[row][:2]) >= min_size:
                rows[position] = row
    missing = [i for i, row in enumerate(rows) if row is None]
    read = partial(read_file, image_size=image_size, crop=crop, min_size=min_size)
    fresh = dict(zip(missing, map_in_pool(read, [paths[i] for i in missing], workers), strict=True))
    readable: list[ImageFile] = []
    kept: list[int | FileRead] = []  # per readable file: its row in the set, or what decoding it gave
    bad: list[tuple[str, str]] = []
    for position, (item, row) in enumerate(zip(files, rows, strict=True)):
        if row is None and fresh[position].bad is not None:
            bad.append((item.path, str(fresh[position].bad)))
            continue
        readable.append(item)
        kept.append(fresh[position] if row is None else row)
    if not readable:
        raise BrainMRIError(f"None of the {len(files)} files under {root} can be read as an image.")
    sha256 = [k.sha256 if isinstance(k, FileRead) else stored.sha256[k] for k in kept]  # type: ignore[union-attr]
    sizes = np.array(
        [k.size if isinstance(k, FileRead) else stored.sizes[k] for k in kept],  # type: ignore[union-attr]
        dtype=np.int64,
    ).reshape(-1, 3)
    notes = [
        (item.path, f"{frames} frames; only the first is used")
        for item, frames in zip(readable, sizes[:, 2].tolist(), strict=True)
        if frames > 1
    ]
    decoded_now = sum(isinstance(source, FileRead) for source in kept)
    whole_set = stored is not None and sha256 == stored.sha256 and not decoded_now
    if whole_set:
        assert stored is not None
        pixels, prints, decoded = stored.pixels, stored.fingerprints, stored.pixel_hashes
    else:
        pixels = np.empty((len(readable), image_size, image_size), np.uint8)
        prints = np.empty((len(readable), FINGERPRINT_SIZE**2), np.float32)
        decoded = []
        for position, source in enumerate(kept):
            if isinstance(source, FileRead):
                assert source.entry is not None
                pixels[position], prints[position], pixel_digest = source.entry
            else:
                assert stored is not None
                pixels[position], prints[position] = stored.pixels[source], stored.fingerprints[source]
                pixel_digest = stored.pixel_hashes[source]
            decoded.append(pixel_digest)
    return Decoded(
        readable,
        pixels,
        prints,
        sha256,
        decoded,
        sizes,
        bad,
        notes,
        decoded_now,
        whole_set,
    )


def map_in_pool(function, items: list, workers: int) -> list:
    """``function`` of each item, in order: in ``workers`` processes when more than one."""
    if workers > 1 and len(items) > 1:
        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(function, items, chunksize=max(1, len(items) // (8 * workers))))
    return [function(item) for item in items]
