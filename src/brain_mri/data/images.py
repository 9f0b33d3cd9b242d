"""Find the images of a class-folder data set and decode them, whatever their extension or mode says."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
        raise BrainMRIError(
            f"The data folder {root} must hold one sub-folder per class (at least two), "
            f"found {classes or 'none'}."
        )
    return classes


def scan_image_files(root: Path) -> list[ImageFile]:
    """Every non-hidden file in each class folder, in a deterministic order (class, then path)."""
    files = []
    for label, class_name in enumerate(discover_classes(root)):
        class_dir = root / class_name
        members = sorted(p for p in class_dir.iterdir() if p.is_file() and not is_ignored(p))
        if not members:
            raise BrainMRIError(f"The class folder {class_dir} holds no files.")
        files += [ImageFile(p.relative_to(root).as_posix(), class_name, label) for p in members]
    return files


def read_grayscale(path: Path) -> Image.Image:
    """Open any image PIL can read and return it upright as 8-bit grayscale.

    PIL decides the format from the content, not the extension (the Kaggle set has PNGs named ``.jpg``).
    High-bit-depth images are rescaled to 0-255 instead of being clipped.
    """
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            pixels = np.asarray(image, dtype=np.float64)
            top = pixels.max()
            scaled = pixels * (255.0 / top) if top > 0 else pixels
            return Image.fromarray(scaled.astype(np.uint8), mode="L")
        if image.mode == "P":
            image = image.convert("RGBA")
        return image.convert("L")


def resize_square(image: Image.Image, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (as the study did, ignoring aspect ratio) and return uint8 pixels."""
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def decode_images(root: Path, files: list[ImageFile], image_size: int, fingerprint):
    """Decode every file once: the resized uint8 images (N, size, size) and a content fingerprint per file.

    All unreadable files are collected and reported together, so a user fixes them in one pass.
    """
    pixels, prints, bad = [], [], []
    for item in files:
        try:
            gray = read_grayscale(root / item.path)
            gray.load()
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            bad.append(f"  {item.path}: {err}")
            continue
        pixels.append(resize_square(gray, image_size))
        prints.append(fingerprint(gray))
    if bad:
        raise BrainMRIError(f"{len(bad)} file(s) under {root} cannot be read as images:\n" + "\n".join(bad))
    return np.stack(pixels), np.stack(prints)
