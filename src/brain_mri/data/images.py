"""Find the images of a class-folder data set and decode them, whatever their extension or mode says."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from brain_mri.errors import BrainMRIError

log = logging.getLogger(__name__)

SYSTEM_FILE_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db"})


@dataclass(frozen=True)
class ImageFile:
    """One image of the data set: its path relative to the data root and its class."""

    path: str
    class_name: str
    label: int


def is_ignored(path: Path) -> bool:
    """Hidden and operating-system files (``.DS_Store``, ``Thumbs.db``) are never images."""
    return path.name.startswith(".") or path.name.lower() in SYSTEM_FILE_NAMES


def list_folder(folder: Path) -> list[Path]:
    """The entries of a folder, or one message that names it when it cannot be read."""
    try:
        return list(folder.iterdir())
    except OSError as err:
        raise BrainMRIError(
            f"Cannot read the folder {folder} ({err.strerror or err}): check its permissions."
        ) from None


def is_broken_link(path: Path) -> bool:
    """A symbolic link whose target is missing or loops: listed as unreadable, never skipped in silence."""
    return path.is_symlink() and not path.exists()


def discover_classes(root: Path) -> list[str]:
    """Class names are the sub-folder names in sorted order, so for the Kaggle set ``no`` = 0, ``yes`` = 1."""
    if root.exists() and not root.is_dir():
        raise BrainMRIError(
            f"The data root {root} is a file; data.root must be a folder with one sub-folder per class "
            "(e.g. no/ and yes/)."
        )
    if not root.is_dir():
        raise BrainMRIError(f"The data folder {root} does not exist.")
    classes = sorted(p.name for p in list_folder(root) if p.is_dir() and not is_ignored(p))
    if len(classes) < 2:
        hint = ""
        if len(classes) == 1 and len([p for p in list_folder(root / classes[0]) if p.is_dir()]) >= 2:
            hint = f" Did you mean data.root={root / classes[0]}?"
        raise BrainMRIError(
            f"The data folder {root} must hold one sub-folder per class (at least two), "
            f"found {classes or 'none'}.{hint}"
        )
    return classes


def folder_labels(
    folders: list[str], class_names: list[str] | None, class_map: dict[str, str] | None
) -> dict[str, tuple[str, int]]:
    """Class folder -> (class name, label). Without ``class_names`` (training) the folders are the classes,
    in sorted order. With them (a model's classes), folders are matched by name, never by position,
    after renaming through ``class_map`` ({folder: class}); a folder that matches no class stops."""
    if class_names is None:
        return {folder: (folder, label) for label, folder in enumerate(folders)}
    renamed = {folder: str((class_map or {}).get(folder, folder)) for folder in folders}
    unknown = [folder for folder in folders if renamed[folder] not in class_names]
    if unknown:
        template = ", ".join(f"{folder}: <class>" for folder in unknown)
        raise BrainMRIError(
            f"The class folders {folders} do not match the model's classes {class_names}: "
            f"{', '.join(unknown)} is none of them. Say which class each folder holds, "
            f"eval.class_map={{{template}}}, with <class> one of {', '.join(class_names)}."
        )
    return {folder: (renamed[folder], class_names.index(renamed[folder])) for folder in folders}


def scan_image_files(
    root: Path, class_names: list[str] | None = None, class_map: dict[str, str] | None = None
) -> list[ImageFile]:
    """Every non-hidden file in each class folder, in a deterministic order (folder, then path).

    Labels follow ``class_names`` when given (see :func:`folder_labels`), else the sorted folder names.
    """
    files = []
    labels = folder_labels(discover_classes(root), class_names, class_map)
    for folder, (class_name, label) in labels.items():
        class_dir = root / folder
        entries = [p for p in list_folder(class_dir) if not is_ignored(p)]
        nested = sorted(p.name for p in entries if p.is_dir())
        if nested:
            raise BrainMRIError(
                f"The class folder {class_dir} holds sub-folders ({', '.join(nested)}): "
                "images must lie directly in the class folders."
            )
        members = sorted(p for p in entries if p.is_file() or is_broken_link(p))
        if not members:
            raise BrainMRIError(f"The class folder {class_dir} holds no files.")
        files += [ImageFile(p.relative_to(root).as_posix(), class_name, label) for p in members]
    return files


def read_grayscale(source: Path | BinaryIO) -> Image.Image:
    """Open any image PIL can read and return it upright as 8-bit grayscale.

    PIL decides the format from the content, not the extension (the Kaggle set has PNGs named ``.jpg``).
    EXIF rotation is applied, transparent pixels become black (the background of a scan), and
    high-bit-depth images are rescaled to 0-255 instead of being clipped.
    """
    with Image.open(source) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            pixels = np.asarray(image, dtype=np.float64)
            top = pixels.max()
            scaled = pixels * (255.0 / top) if top > 0 else pixels
            return Image.fromarray(scaled.astype(np.uint8), mode="L")
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        return image.convert("L")


def image_header(content: bytes) -> tuple[int, int, int]:
    """(width, height, frames) from the header alone (PIL reads pixels only when asked)."""
    with Image.open(io.BytesIO(content)) as image:
        return image.width, image.height, getattr(image, "n_frames", 1)


def unreadable_reason(content: bytes, err: Exception) -> str:
    """Why a file cannot be read, in words: its type where it is known, never PIL's object address."""
    if content[128:132] == b"DICM":
        return "a DICOM file: DICOM slices cannot be read yet; export them as PNG"
    if isinstance(err, UnidentifiedImageError):
        return f"not an image format PIL can read ({len(content)} bytes)" if content else "an empty file"
    return str(err) or type(err).__name__


def resize_square(image: Image.Image, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (as the study did, ignoring aspect ratio) and return uint8 pixels."""
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)


# Bump when reading, resizing or fingerprinting changes, so that cached results are not reused.
PREPROCESSING_VERSION = 1


class DecodeCache:
    """Decoded images on disk, one entry per (file content, image size, preprocessing version).

    Every job of a sweep and every later run reads the entries instead of decoding again; a changed file
    has a new content hash and so a new entry. Entries are written atomically, so parallel jobs can share
    the folder. The cache is disposable: an entry that does not read is a miss (counted in ``damaged``,
    decoded again and rewritten), and a folder that cannot be written turns the cache off with a warning.
    """

    def __init__(self, folder: Path, image_size: int):
        self.folder = Path(folder) / f"v{PREPROCESSING_VERSION}-{image_size}px"
        self.damaged = 0
        self.writable = True

    def _path(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / f"{sha256}.npz"

    def get(self, sha256: str) -> tuple[np.ndarray, np.ndarray] | None:
        path = self._path(sha256)
        try:
            with np.load(path) as entry:
                return entry["pixels"], entry["fingerprint"]
        except FileNotFoundError:
            return None
        except Exception:  # cut off, empty, not a zip, unreadable: np.load raises many kinds
            self.damaged += path.exists()
            return None

    def put(self, sha256: str, pixels: np.ndarray, fingerprint: np.ndarray) -> None:
        if not self.writable:
            return
        path = self._path(sha256)
        temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(temporary, pixels=pixels, fingerprint=fingerprint)
            os.replace(temporary, path)
        except OSError as err:
            self.writable = False
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            log.warning("Cannot write the decode cache in %s (%s); running without it.", self.folder, err)


@dataclass
class DecodedImages:
    """What one pass over the files gives: pixels, fingerprints and content hashes of the readable files."""

    readable: list[ImageFile]
    pixels: np.ndarray  # (N, size, size) uint8
    fingerprints: np.ndarray  # (N, D) float32
    sha256: list[str]
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, what to know): read, with a warning
    fresh: list[int] = field(default_factory=list)  # decoded now (not from the cache): indices into readable

    def save_to(self, cache: DecodeCache) -> None:
        """Write the freshly decoded images to the cache (done by one process per machine, not by all)."""
        for i in self.fresh:
            cache.put(self.sha256[i], self.pixels[i], self.fingerprints[i])
        self.fresh = []


def decode_images(
    root: Path,
    files: list[ImageFile],
    image_size: int,
    fingerprint,
    cache: DecodeCache | None = None,
    min_size: int = 1,
) -> DecodedImages:
    """Read every file once: hash its bytes, then take its pixels and fingerprint from the cache, from an
    identical file earlier in this pass, or decode. Nothing is written to the cache here.

    Unreadable files (truncated, empty, not an image, DICOM, too large to decode safely, a shorter side
    below ``min_size`` pixels) are collected with their reasons, never raised one by one, so a user sees
    all of them at once. Images with several frames (animated GIF, multi-page TIFF) are read from their
    first frame and noted.
    """
    readable, pixels, prints, hashes, bad, fresh, notes = [], [], [], [], [], [], []
    known: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for item in files:
        try:
            content = (root / item.path).read_bytes()
        except OSError as err:
            bad.append((item.path, str(err)))
            continue
        sha256 = hashlib.sha256(content).hexdigest()
        try:
            width, height, frames = image_header(content)
        except Exception as err:  # PIL raises many types for broken files; each is reported, none fatal
            bad.append((item.path, unreadable_reason(content, err)))
            continue
        if min(width, height) < min_size:
            bad.append((item.path, f"too small: {width}x{height} pixels (data.min_image_size={min_size})"))
            continue
        if frames > 1:
            notes.append((item.path, f"{frames} frames; only the first is used"))
        entry = known.get(sha256) or (cache.get(sha256) if cache else None)
        if entry is None:
            try:
                gray = read_grayscale(io.BytesIO(content))
            except Exception as err:
                bad.append((item.path, unreadable_reason(content, err)))
                continue
            entry = (resize_square(gray, image_size), fingerprint(gray))
            fresh.append(len(readable))
        known[sha256] = entry
        readable.append(item)
        hashes.append(sha256)
        pixels.append(entry[0])
        prints.append(entry[1])
    if not readable:
        raise BrainMRIError(f"None of the {len(files)} files under {root} can be read as an image.")
    return DecodedImages(readable, np.stack(pixels), np.stack(prints), hashes, bad, notes=notes, fresh=fresh)
