"""Every transform between a file and the network, in one place: deterministic ones (grayscale, resize,
the model's input tensor), the random batched ones of training, and :func:`prepare_images`, which turns
new image files into what a trained model takes, from the model's own input contract alone."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps
from scipy import ndimage

from brain_mri.errors import BrainMRIError

# Bump when reading, resizing or fingerprinting changes, so that cached results are not reused.
PREPROCESSING_VERSION = 1


def is_dicom(header: bytes) -> bool:
    """DICOM files (Part 10) carry ``DICM`` after a 128-byte preamble, whatever their name."""
    return header[128:132] == b"DICM"


def pydicom_module():
    try:
        import pydicom
    except ImportError as err:
        raise BrainMRIError("a DICOM file: reading DICOM needs pydicom: pip install -e '.[dicom]'") from err
    return pydicom


def read_dicom(source: Path | BinaryIO) -> Image.Image:
    """A DICOM slice as 8-bit grayscale: stored values through the modality LUT (rescale slope and
    intercept) and the file's own window (Window Center / Width, or its VOI LUT); without a window, the
    slice's full range. MONOCHROME1 (inverted) slices are turned the usual way round; of several frames,
    the first."""
    pydicom = pydicom_module()
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    dataset = pydicom.dcmread(source)
    pixels = dataset.pixel_array
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    if "WindowCenter" in dataset or "VOILUTSequence" in dataset:
        values = apply_voi_lut(values, dataset).astype(np.float64)
        low, high = apply_voi_lut(np.array([-1e12, 1e12]), dataset)  # the window's output range
    else:
        low, high = values.min(), values.max()
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 255.0 - scaled
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def read_grayscale(source: Path | BinaryIO) -> Image.Image:
    """Open any image PIL can read, or a DICOM slice, and return it upright as 8-bit grayscale.

    PIL decides the format from the content, not the extension (the Kaggle set has PNGs named ``.jpg``).
    EXIF rotation is applied, transparent pixels become black (the background of a scan), and
    high-bit-depth images are rescaled to 0-255 instead of being clipped. DICOM: :func:`read_dicom`.
    """
    if isinstance(source, (str, Path)):
        with open(source, "rb") as file:
            header = file.read(132)
    else:
        start = source.tell()
        header = source.read(132)
        source.seek(start)
    if is_dicom(header):
        return read_dicom(source)
    with Image.open(source) as opened:
        image: Image.Image = ImageOps.exif_transpose(opened)
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            return Image.fromarray(to_8bit(np.asarray(image, dtype=np.float64)), mode="L")
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        return image.convert("L")


def to_8bit(pixels: np.ndarray) -> np.ndarray:
    """High-bit-depth or float pixels as 0-255: scaled from 0 to the largest value (from the smallest
    when some are negative). An image with NaN or infinite pixels is damaged, not dark: it is refused
    (listed as unreadable wherever it is read: training, evaluation, prediction)."""
    finite = np.isfinite(pixels)
    if not finite.all():
        raise ValueError(
            f"{int((~finite).sum())} of its {pixels.size} pixels are NaN or infinite (a damaged float image)"
        )
    low = min(float(pixels.min()), 0.0)
    high = float(pixels.max())
    scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
    return scaled.astype(np.uint8)  # truncated: the decode cache holds images made so


def resize_square(image: Image.Image, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (as the study did, ignoring aspect ratio) and return uint8 pixels."""
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


CROPS = ("none", "brain")


def otsu_threshold(pixels: np.ndarray) -> float:
    """The grey level that best separates two classes of pixels (Otsu's method on a 256-bin histogram)."""
    counts = np.bincount(pixels.ravel().astype(np.uint8), minlength=256).astype(np.float64)
    levels = np.arange(256)
    below = np.cumsum(counts)
    mean_below = np.cumsum(counts * levels)
    above = below[-1] - below
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_below[-1] * below / below[-1] - mean_below) ** 2 / (below * above)
    return float(np.nanargmax(between[:-1]))


def crop_to_brain(image: Image.Image) -> Image.Image:
    """The image cut to :func:`brain_box`."""
    return image.crop(brain_box(image))


def brain_box(image: Image.Image, margin: float = 0.02) -> tuple[int, int, int, int]:
    """The bounding box (left, top, right, bottom, in pixels) of the head: the largest bright component
    after smoothing and an Otsu threshold, plus a small margin. Images whose largest component is under
    5% of the area keep their whole frame (nothing found to crop to), so a crop never throws away most of
    a slice."""
    pixels = np.asarray(image, dtype=np.float32)
    whole = (0, 0, pixels.shape[1], pixels.shape[0])
    if pixels.max() == pixels.min():
        return whole
    smooth = ndimage.gaussian_filter(pixels, sigma=max(pixels.shape) / 200)
    components, count = ndimage.label(smooth > otsu_threshold(smooth))
    if count == 0:
        return whole
    sizes = np.bincount(components.ravel())[1:]
    largest = components == int(np.argmax(sizes)) + 1
    if largest.sum() < 0.05 * largest.size:
        return whole
    rows, cols = np.flatnonzero(largest.any(axis=1)), np.flatnonzero(largest.any(axis=0))
    pad = round(margin * max(pixels.shape))
    return (
        max(int(cols[0]) - pad, 0),
        max(int(rows[0]) - pad, 0),
        min(int(cols[-1]) + 1 + pad, pixels.shape[1]),
        min(int(rows[-1]) + 1 + pad, pixels.shape[0]),
    )


def model_pixels(image: Image.Image, size: int, crop: str = "none") -> np.ndarray:
    """A decoded grayscale image -> the uint8 (size, size) pixels a model takes: cropped, then resized."""
    if crop not in CROPS:
        raise BrainMRIError(f"crop must be one of {', '.join(CROPS)}, got '{crop}'.")
    return resize_square(crop_to_brain(image) if crop == "brain" else image, size)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, H, W) -> float (B, 3, H, W) in [0, 1]: the study's grayscale repeated to 3 channels.
    (Normalisation, where a model has one, is the model's first step: see ``BrainMRIClassifier.forward``.)"""
    return images.float().div_(255.0).expand(-1, 3, -1, -1)


def augmentation_policy(
    image_size: int,
    flip: float = 0.0,
    degrees: float = 0.0,
    translate: float = 0.0,
    zoom: float = 0.0,
    crop_scale: float = 1.0,
    brightness: float = 0.0,
    contrast: float = 0.0,
    mri_artefacts: float = 0.0,
) -> torch.nn.Module | None:
    """The random transforms of training batches (kornia: batched, on the batch's device, drawn from
    torch's seeded generator so a resumed run repeats them). None when every setting is off (the study).

    ``flip``: probability of a left-right flip; ``degrees``: rotation range; ``translate`` and ``zoom``:
    shift (fraction of the side) and scale range of an affine move; ``crop_scale`` < 1: a random resized
    crop keeping that fraction of the area or more; ``brightness``/``contrast``: jitter strength;
    ``mri_artefacts``: probability of each of MONAI's MRI artefacts (bias field, Gibbs ringing, Rician
    noise), which imitate what differs between scanners (the ``mri`` extra).
    """
    from kornia import augmentation as K

    steps: list[torch.nn.Module] = []
    if crop_scale < 1.0:
        steps.append(K.RandomResizedCrop((image_size, image_size), scale=(crop_scale, 1.0)))
    if flip > 0:
        steps.append(K.RandomHorizontalFlip(p=flip))
    if degrees > 0 or translate > 0 or zoom > 0:
        steps.append(
            K.RandomAffine(
                degrees,
                translate=(translate, translate) if translate > 0 else None,
                scale=(1 - zoom, 1 + zoom) if zoom > 0 else None,
                p=1.0,
            )
        )
    if brightness > 0 or contrast > 0:
        steps.append(K.ColorJitter(brightness=brightness, contrast=contrast, p=1.0))
    if mri_artefacts > 0:
        steps.append(MRIArtefacts(mri_artefacts))
    return torch.nn.Sequential(*steps, Clamp()) if steps else None


class Clamp(torch.nn.Module):
    """Keeps augmented pixels in [0, 1], the range of the model's input."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.clamp(0.0, 1.0)


class MRIArtefacts(torch.nn.Module):
    """MONAI's bias field, Gibbs ringing and Rician noise, each with probability ``p``, per image (MONAI's
    intensity transforms are not batched); applied to one channel and repeated, as the input is grayscale."""

    def __init__(self, p: float):
        super().__init__()
        try:
            from monai import transforms
        except ImportError as err:
            raise BrainMRIError("The MRI artefact augmentation needs MONAI: pip install -e '.[mri]'") from err
        self.transform = transforms.Compose(
            [
                transforms.RandBiasField(prob=p, coeff_range=(0.0, 0.3)),
                transforms.RandGibbsNoise(prob=p, alpha=(0.0, 0.6)),
                transforms.RandRicianNoise(prob=p, std=0.03, relative=True, sample_std=True),
            ]
        )
        self.transform.set_random_state(seed=int(torch.randint(0, 2**31 - 1, ()).item()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        gray = images[:, :1]
        out = torch.stack([torch.as_tensor(self.transform(image.cpu())) for image in gray])
        return out.to(images.device, images.dtype).expand(-1, images.shape[1], -1, -1)


def prepare_images(sources: list[Path | BinaryIO], image_size: int, crop: str = "none") -> torch.Tensor:
    """Image files -> the float (N, 3, H, W) batch a model takes, prepared as in training from the model's
    input contract (``model.hparams.image_size`` and ``model.hparams.crop``)."""
    pixels = np.stack([model_pixels(read_grayscale(source), image_size, crop) for source in sources])
    return to_model_input(torch.from_numpy(pixels).unsqueeze(1))
