"""Every transform between a file and the network, in one place: deterministic ones (grayscale, resize,
the model's input tensor), the random batched ones of training, and :func:`prepare_images`, which turns
new image files into what a trained model takes, from the model's own input contract alone."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

# Bump when reading, resizing or fingerprinting changes, so that cached results are not reused.
PREPROCESSING_VERSION = 1


def read_grayscale(source: Path | BinaryIO) -> Image.Image:
    """Open any image PIL can read and return it upright as 8-bit grayscale.

    PIL decides the format from the content, not the extension (the Kaggle set has PNGs named ``.jpg``).
    EXIF rotation is applied, transparent pixels become black (the background of a scan), and
    high-bit-depth images are rescaled to 0-255 instead of being clipped.
    """
    with Image.open(source) as opened:
        image: Image.Image = ImageOps.exif_transpose(opened)
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
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, H, W) -> float (B, 3, H, W) in [0, 1]: the study's grayscale repeated to 3 channels."""
    return images.float().div_(255.0).expand(-1, 3, -1, -1)


def augment_batch(
    images: torch.Tensor, max_degrees: float = 10.0, max_shift: float = 0.05, max_zoom: float = 0.1
) -> torch.Tensor:
    """Random left-right flip, rotation, shift and scale of every image of a float batch, in one
    ``grid_sample`` call on the batch's device (no per-image Python work)."""
    count = len(images)
    angle = torch.empty(count, device=images.device).uniform_(-max_degrees, max_degrees).deg2rad()
    scale = torch.empty(count, device=images.device).uniform_(1 - max_zoom, 1 + max_zoom)
    flip = torch.where(torch.rand(count, device=images.device) < 0.5, -1.0, 1.0)
    shift = torch.empty(count, 2, device=images.device).uniform_(-2 * max_shift, 2 * max_shift)
    theta = torch.zeros(count, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 0, 1] = flip * angle.cos() / scale, -angle.sin() / scale
    theta[:, 1, 0], theta[:, 1, 1] = flip * angle.sin() / scale, angle.cos() / scale
    theta[:, :, 2] = shift
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, padding_mode="zeros", align_corners=False)


def prepare_images(sources: list[Path | BinaryIO], image_size: int) -> torch.Tensor:
    """Image files -> the float (N, 3, H, W) batch a model trained at ``image_size`` takes, prepared as
    in training (``model.hparams.image_size`` is that size)."""
    pixels = np.stack([resize_square(read_grayscale(source), image_size) for source in sources])
    return to_model_input(torch.from_numpy(pixels).unsqueeze(1))
