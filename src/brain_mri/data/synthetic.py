"""A deterministic phantom data set: brain-like slices with and without a tumor-like lesion.

It is written as image files in class folders (``no/``, ``yes/``) so that exactly the loading code used
for real data runs on it. A few files are planted duplicates (a byte copy and a resized JPEG re-encoding
of another slice), so the duplicate-aware split is exercised too. ``lesions.csv`` beside the class
folders says where each lesion is, so explanations (Grad-CAM) can be checked against the truth.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_FOLDERS = ("no", "yes")
LESIONS_FILE = "lesions.csv"  # path, x, y, radius: in fractions of the image width (any resolution)


def phantom_slice(
    rng: np.random.Generator, size: int, lesion: bool
) -> tuple[Image.Image, tuple[float, float, float] | None]:
    """One axial 'slice': skull ring, textured brain, two ventricles and optionally a bright lesion.
    Returns the slice and the lesion's centre and radius (two standard deviations of its Gaussian
    profile, where it still adds 8 % brightness) as fractions of the width, or None."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    cx, cy = rng.normal(0, 0.02, 2)
    ax, ay = rng.uniform(0.36, 0.42), rng.uniform(0.42, 0.47)
    radius = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
    # Coarse random tissue texture: it makes every slice distinct, as real scans are.
    texture = Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    image = np.where(radius < 1.0, 0.45 + 0.6 * (np.asarray(texture) / 255.0 - 0.5), 0.0)
    image[(radius >= 0.85) & (radius < 1.0)] = 0.95
    for side in (-1, 1):
        vx, vy = cx + side * rng.uniform(0.04, 0.07), cy + rng.normal(0, 0.02)
        image[((xx - vx) / 0.035) ** 2 + ((yy - vy) / 0.12) ** 2 < 1.0] = 0.15
    where = None
    if lesion:
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.25)
        lx, ly = cx + dist * np.cos(angle), cy + dist * np.sin(angle)
        lr = rng.uniform(0.05, 0.11)
        blob = np.exp(-(((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * lr**2)))
        image = np.clip(image + 0.6 * blob * (radius < 0.85), 0, 1)
        where = (float(lx + 0.5), float(ly + 0.5), float(2 * lr))
    image += rng.normal(0, 0.03, image.shape)
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L"), where


def generate_phantom_dataset(root: Path, per_class: int = 40, size: int = 96, seed: int = 0) -> Path:
    """Write the phantom set to ``root`` unless it is already there; returns ``root``.

    Files are written to a temporary folder and moved into place in one rename, so parallel sweep jobs
    never see a half-written set.
    """
    root = Path(root)
    if all((root / c).is_dir() for c in CLASS_FOLDERS):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    staging = Path(tempfile.mkdtemp(prefix=".phantom-", dir=root.parent))
    lesions = []
    for label, class_name in enumerate(CLASS_FOLDERS):
        folder = staging / class_name
        folder.mkdir()
        where = []
        for index in range(per_class):
            image, lesion = phantom_slice(rng, size, lesion=bool(label))
            image.save(folder / f"{class_name}_{index:03d}.png")
            where.append(lesion)
        shutil.copyfile(folder / f"{class_name}_000.png", folder / f"{class_name}_copy_of_000.png")
        with Image.open(folder / f"{class_name}_001.png") as original:
            resized = original.resize((size * 3 // 4, size * 3 // 4), Image.Resampling.BILINEAR)
            resized.save(folder / f"{class_name}_resized_001.jpg", quality=90)
        named = [(f"{class_name}_{i:03d}.png", lesion) for i, lesion in enumerate(where)]
        named += [(f"{class_name}_copy_of_000.png", where[0]), (f"{class_name}_resized_001.jpg", where[1])]
        lesions += [(f"{class_name}/{name}", *lesion) for name, lesion in named if lesion]
    with open(staging / LESIONS_FILE, "w", newline="") as out:
        csv.writer(out).writerows([("path", "x", "y", "radius"), *lesions])
    staging.chmod(0o755)  # mkdtemp makes it private
    try:
        os.rename(staging, root)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return root
