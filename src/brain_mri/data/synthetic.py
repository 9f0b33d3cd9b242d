"""A deterministic phantom data set: brain-like slices with and without a tumor-like lesion.

It is written as image files in class folders (``no/``, ``yes/``) so that exactly the loading code used
for real data runs on it. A few files are planted duplicates (a byte copy and a resized JPEG re-encoding
of another slice), so the duplicate-aware split is exercised too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_FOLDERS = ("no", "yes")


def phantom_slice(rng: np.random.Generator, size: int, lesion: bool) -> Image.Image:
    """One axial 'slice': skull ring, textured brain, two ventricles and optionally a bright lesion."""
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
    if lesion:
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.25)
        lx, ly = cx + dist * np.cos(angle), cy + dist * np.sin(angle)
        lr = rng.uniform(0.05, 0.11)
        blob = np.exp(-(((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * lr**2)))
        image = np.clip(image + 0.6 * blob * (radius < 0.85), 0, 1)
    image += rng.normal(0, 0.03, image.shape)
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L")


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
    for label, class_name in enumerate(CLASS_FOLDERS):
        folder = staging / class_name
        folder.mkdir()
        for index in range(per_class):
            phantom_slice(rng, size, lesion=bool(label)).save(folder / f"{class_name}_{index:03d}.png")
        shutil.copyfile(folder / f"{class_name}_000.png", folder / f"{class_name}_copy_of_000.png")
        with Image.open(folder / f"{class_name}_001.png") as original:
            resized = original.resize((size * 3 // 4, size * 3 // 4), Image.Resampling.BILINEAR)
            resized.save(folder / f"{class_name}_resized_001.jpg", quality=90)
    staging.chmod(0o755)  # mkdtemp makes it private
    try:
        os.rename(staging, root)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return root
