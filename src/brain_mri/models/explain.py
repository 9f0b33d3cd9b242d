"""Explanations: where in a slice the evidence for a class lies, and the overlay images that show it.

The maps come from captum: Grad-CAM on the layer each model config names (``cam_layer``: the last
convolutional stage, whose feature map is 7x7 for ResNet-18 at 224 px and 3x3 at 96 px), guided Grad-CAM
(that map times guided backpropagation, per pixel) or integrated gradients; an ensemble averages its
members' maps over its views. :func:`overlay` draws one slice with its map and probability.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import GuidedGradCam, IntegratedGradients, LayerGradCam
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from brain_mri.errors import BrainMRIError
from brain_mri.models import BrainMRIClassifier, EnsembleClassifier

EXPLANATIONS_DIR = "explanations"  # overlay PNGs, in the task's output folder
OVERLAY_SIZE = 256  # pixels: small inputs (100 px) are enlarged so that the map can be read


# Explanation methods (``explain=`` of predict.py, ``eval.explain``): each gives a map per image at the
# input's resolution. guided_grad_cam is the default: on figshare's tumour boxes its peak falls in the box
# for 48% of test slices, against 1% for grad_cam on the last stage (docs/evaluation.md).
METHODS = ("guided_grad_cam", "grad_cam", "integrated_gradients")
DEFAULT_METHOD = "guided_grad_cam"


def explanation(
    model: BrainMRIClassifier,
    images: torch.Tensor,
    targets: torch.Tensor,
    method: str = DEFAULT_METHOD,
    layer: str | None = None,
) -> torch.Tensor:
    """(N, H, W) maps of the evidence for ``targets`` (a class index per image) at the input's
    resolution, each scaled to a maximum of 1 (all zeros where nothing speaks for the class):
    ``grad_cam`` (captum's LayerGradCam on the model's ``cam_layer``, or ``layer``: coarse, one value per
    cell of that layer's map), ``guided_grad_cam`` (that map times guided backpropagation: per pixel), or
    ``integrated_gradients`` (per pixel, 32 steps from a black image; about 20 times slower)."""
    if method not in METHODS:
        raise BrainMRIError(f"The explanation method must be one of {', '.join(METHODS)}, got '{method}'.")
    if isinstance(model, EnsembleClassifier):
        # every view (identity, mirror) is its own inverse: a view's map is mapped back by the view
        members: list[BrainMRIClassifier] = list(model.members)  # type: ignore[arg-type]
        each = [
            view(explanation(member, view(images), targets, method, layer))
            for member in members
            for view in model.views
        ]
        return normalised(torch.stack(each).mean(dim=0))
    was_training = model.training
    model.eval()
    # gradients even when called from a test or prediction loop (inference mode: its tensors are cloned)
    with torch.inference_mode(False), torch.enable_grad():
        inputs, target = images.clone().requires_grad_(True), targets.tolist()
        if method == "integrated_gradients":
            # one image batch at a time through the 32 steps: memory as for one batch, not 32
            found = IntegratedGradients(model).attribute(
                inputs, target=target, n_steps=32, internal_batch_size=len(inputs)
            )
            found = found.abs().sum(dim=1)
        else:
            module = cam_module(model, layer)
            if method == "grad_cam":
                found = feature_map(
                    LayerGradCam(model, module).attribute(inputs, target=target, relu_attributions=True),
                    layer or model.hparams.cam_layer,
                )
                found = F.interpolate(
                    found.detach().float(), size=images.shape[-2:], mode="bilinear", align_corners=False
                )[:, 0]
            else:
                with warnings.catch_warnings():  # captum's note that it hooks the ReLUs for the call
                    warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
                    found = GuidedGradCam(model, module).attribute(inputs, target=target).abs().sum(dim=1)
    model.train(was_training)
    return normalised(found.detach().float())


def cam_module(model: BrainMRIClassifier, layer: str | None):
    """The network's module that Grad-CAM reads: ``layer``, or the model's own ``cam_layer``."""
    layer_name = layer or model.hparams.get("cam_layer")
    if not layer_name:
        raise BrainMRIError(
            f"This {model.hparams.arch} checkpoint names no Grad-CAM layer (it was saved before "
            f"model.cam_layer existed): pass cam_layer=<module>, as conf/model/{model.hparams.arch}.yaml "
            "names it."
        )
    return model.layer(layer_name)


def feature_map(maps: torch.Tensor, layer_name: str) -> torch.Tensor:
    if maps.dim() != 4:
        raise BrainMRIError(
            f"cam_layer={layer_name}: its output is not a feature map (N, C, H, W) but {tuple(maps.shape)}; "
            "Grad-CAM needs a convolutional layer."
        )
    return maps


def normalised(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return maps / peak


BOX_COLOUR = (0, 255, 0)  # the box a map is measured against (a tumour's), in the overlay
PEAK_COLOUR = (255, 255, 255)  # the map's peak: where the pointing game says the map points


def overlay(
    pixels: np.ndarray, heat_map: np.ndarray, caption: str, box: np.ndarray | None = None
) -> Image.Image:
    """The slice (H, W in [0, 1]) in gray, the heat map over it in colour (transparent where cold), and
    a caption strip above it; with ``box`` (left, top, right, bottom in the slice's pixels), that box in
    green and the map's peak (if it has one) as a white cross."""
    gray = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    heat = Image.fromarray((colormaps["jet"](heat_map)[..., :3] * 255).astype(np.uint8))
    alpha = Image.fromarray((np.clip(heat_map, 0, 1) * 0.6 * 255).astype(np.uint8))
    size = (max(OVERLAY_SIZE, gray.width), max(OVERLAY_SIZE, gray.height))
    scale = np.array([size[0] / gray.width, size[1] / gray.height])
    gray, heat, alpha = (im.resize(size, Image.Resampling.BILINEAR) for im in (gray, heat, alpha))
    picture = Image.composite(heat, gray, alpha)
    if box is not None:
        draw, width = ImageDraw.Draw(picture), max(1, size[0] // 128)
        draw.rectangle(
            [*(np.asarray(box[:2]) * scale), *(np.asarray(box[2:]) * scale - 1)],
            outline=BOX_COLOUR,
            width=width,
        )
        if heat_map.max() > 0:  # an empty map has no peak
            row, column = np.unravel_index(np.argmax(heat_map), heat_map.shape)
            x, y = (np.array([column, row]) + 0.5) * scale
            arm = 4 * width
            draw.line([x - arm, y, x + arm, y], fill=PEAK_COLOUR, width=width)
            draw.line([x, y - arm, x, y + arm], fill=PEAK_COLOUR, width=width)
    text_size = max(12, size[0] // 16)
    font = ImageFont.load_default(size=text_size)
    strip = text_size + 8
    framed = Image.new("RGB", (size[0], size[1] + strip), "black")
    framed.paste(picture, (0, strip))
    ImageDraw.Draw(framed).text((4, 4), caption, fill="white", font=font)
    return framed


def explanation_path(output_dir: Path, image_path: Path, input_root: Path) -> Path:
    """Where the overlay of one input image goes: ``explanations/<its path under the input>.png``
    (the full name is kept, so ``a.jpg`` and ``a.png`` do not collide)."""
    relative = image_path.relative_to(input_root) if image_path != input_root else Path(image_path.name)
    return output_dir / EXPLANATIONS_DIR / relative.parent / f"{relative.name}.png"
