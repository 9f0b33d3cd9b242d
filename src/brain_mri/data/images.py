"""Find the images of a class-folder data set and decode them, whatever their extension or mode says."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from brain_mri.errors import BrainMRIError

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


def discover_classes(root: Path) -> list[str]:
    """Class names are the sub-folder names in sorted order, so for the Kaggle set ``no`` = 0, ``yes`` = 1."""
    if not root.is_dir():
        raise BrainMRIError(f"The data folder {root} does not exist.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not is_ignored(p))
    if len(classes) < 2:
        hint = ""
        if len(classes) == 1 and len([p for p in (root / classes[0]).iterdir() if p.is_dir()]) >= 2:
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
        entries = [p for p in class_dir.iterdir() if not is_ignored(p)]
        nested = sorted(p.name for p in entries if p.is_dir())
        if nested:
            raise BrainMRIError(
                f"The class folder {class_dir} holds sub-folders ({', '.join(nested)}): "
                "images must lie directly in the class folders."
            )
        members = sorted(p for p in entries if p.is_file())
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


def resize_square(image: Image.Image, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (as the study did, ignoring aspect ratio) and return uint8 pixels."""
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)


# Bump when reading, resizing or fingerprinting changes, so that cached results are not reused.
PREPROCESSING_VERSION = 1


class DecodeCache:
    """Decoded images on disk, one entry per (file content, image size, preprocessing version).

    Every job of a sweep and every later run reads the entries instead of decoding again; a changed file
    has a new content hash and so a new entry. Entries are written atomically, so parallel jobs can share
    the folder.
    """

    def __init__(self, folder: Path, image_size: int):
        self.folder = Path(folder) / f"v{PREPROCESSING_VERSION}-{image_size}px"

    def _path(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / f"{sha256}.npz"

    def get(self, sha256: str) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            with np.load(self._path(sha256)) as entry:
                return entry["pixels"], entry["fingerprint"]
        except (OSError, KeyError, ValueError):  # absent or unreadable: decode again
            return None

    def put(self, sha256: str, pixels: np.ndarray, fingerprint: np.ndarray) -> None:
        path = self._path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(temporary, pixels=pixels, fingerprint=fingerprint)
        os.replace(temporary, path)


@dataclass
class DecodedImages:
    """What one pass over the files gives: pixels, fingerprints and content hashes of the readable files."""

    readable: list[ImageFile]
    pixels: np.ndarray  # (N, size, size) uint8
    fingerprints: np.ndarray  # (N, D) float32
    sha256: list[str]
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    fresh: list[int] = field(default_factory=list)  # decoded now (not from the cache): indices into readable

    def save_to(self, cache: DecodeCache) -> None:
        """Write the freshly decoded images to the cache (done by one process per machine, not by all)."""
        for i in self.fresh:
            cache.put(self.sha256[i], self.pixels[i], self.fingerprints[i])
        self.fresh = []


def decode_images(
    root: Path, files: list[ImageFile], image_size: int, fingerprint, cache: DecodeCache | None = None
) -> DecodedImages:
    """Read every file once: hash its bytes, then take its pixels and fingerprint from the cache, from an
    identical file earlier in this pass, or decode. Nothing is written to the cache here.

    Unreadable files (truncated, empty, not an image, too large to decode safely) are collected with their
    reasons, never raised one by one, so a user sees all of them at once.
    """
    readable, pixels, prints, hashes, bad, fresh = [], [], [], [], [], []
    known: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for item in files:
        try:
            content = (root / item.path).read_bytes()
        except OSError as err:
            bad.append((item.path, str(err)))
            continue
        sha256 = hashlib.sha256(content).hexdigest()
        entry = known.get(sha256) or (cache.get(sha256) if cache else None)
        if entry is None:
            try:
                gray = read_grayscale(io.BytesIO(content))
            except Exception as err:  # PIL raises many types for broken files; each is reported, none fatal
                bad.append((item.path, str(err) or type(err).__name__))
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
    return DecodedImages(readable, np.stack(pixels), np.stack(prints), hashes, bad, fresh)
