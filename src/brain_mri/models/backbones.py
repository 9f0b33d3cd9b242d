"""Backbone registry: architecture name -> torchvision network with a new head, random or pretrained."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from brain_mri.errors import BrainMRIError


@dataclass(frozen=True)
class Backbone:
    """A torchvision builder and the name of its classification layer (replaced for our classes, trained
    alone while the backbone is frozen)."""

    build: Callable[..., nn.Module]
    head: str


BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone(models.resnet18, "fc"),
    "resnet50": Backbone(models.resnet50, "fc"),
    "vgg11": Backbone(models.vgg11_bn, "classifier.6"),  # the study's VGG-11 is the batch-norm variant
    "densenet121": Backbone(models.densenet121, "classifier"),
    "efficientnet_b0": Backbone(models.efficientnet_b0, "classifier.1"),
    "convnext_tiny": Backbone(models.convnext_tiny, "classifier.2"),
}
PRETRAINED = ("imagenet",)
log = logging.getLogger(__name__)


def unknown_architecture(arch: str) -> str:
    return f"Unknown model architecture '{arch}'. Choose one of: {', '.join(sorted(BACKBONES))}."


def head_of(net: nn.Module, arch: str) -> nn.Linear:
    head = net.get_submodule(BACKBONES[arch].head)
    assert isinstance(head, nn.Linear), head
    return head


def replace_head(net: nn.Module, arch: str, num_classes: int) -> nn.Module:
    """A new ``num_classes``-way linear layer in place of the (ImageNet) head."""
    parent_name, _, name = BACKBONES[arch].head.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, name, nn.Linear(head_of(net, arch).in_features, num_classes))
    return net


def imagenet_network(arch: str) -> nn.Module:
    """torchvision's ImageNet weights (its default enum), downloaded to torch's cache on first use."""
    weights = models.get_model_weights(BACKBONES[arch].build).DEFAULT
    try:
        return BACKBONES[arch].build(weights=weights)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a cut-off file a RuntimeError
        raise BrainMRIError(
            f"Downloading the ImageNet weights of {arch} ({weights.url}) failed: {err}. Check the "
            "internet connection, or train from a local state dict with model.weights_path=<file>."
        ) from err


def load_state_dict_file(net: nn.Module, arch: str, path: str) -> nn.Module:
    """Weights from a torchvision state dict of the same architecture (e.g. ``torch.save(
    torchvision.models.resnet18().state_dict(), path)``); its head, of any size, is left out."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise BrainMRIError(f"model.weights_path: no file at {file}.")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's message for pickled code is pages long: its first line is enough
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BrainMRIError(
            f"model.weights_path: {file} is not a file of tensors that loads safely ({first_line[:160]})."
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BrainMRIError(f"model.weights_path: {file} holds no state dict (a dict of tensors).")
    head = BACKBONES[arch].head + "."
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    expected = {k: v.shape for k, v in net.state_dict().items() if not k.startswith(head)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k])
    if missing or unexpected or wrong:
        raise BrainMRIError(
            f"model.weights_path: {file} is not a {arch} state dict: {len(missing)} weights missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} of another shape (first: "
            f"{(missing + unexpected + wrong)[0]})."
        )
    net.load_state_dict(state, strict=False)
    log.info("Loaded %s weights from %s (new %s head)", arch, file, BACKBONES[arch].head)
    return net


def build_backbone(
    arch: str, num_classes: int, weights: str | None = None, weights_path: str | None = None
) -> nn.Module:
    """The network for ``arch`` with a ``num_classes``-way head: random weights (the study),
    ``weights="imagenet"`` (downloaded) or ``weights_path`` (a local state dict)."""
    if arch not in BACKBONES:
        raise BrainMRIError(unknown_architecture(arch))
    if num_classes < 2:
        raise BrainMRIError(f"num_classes must be at least 2, got {num_classes}.")
    if weights == "imagenet":
        net = replace_head(imagenet_network(arch), arch, num_classes)
        log.info("Loaded torchvision's ImageNet weights of %s (new %s head)", arch, BACKBONES[arch].head)
        return net
    net = BACKBONES[arch].build(weights=None, num_classes=num_classes)
    return load_state_dict_file(net, arch, weights_path) if weights_path else net
