"""Backbone registry: architecture name -> randomly initialised torchvision network with a new head."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision import models

from brain_mri.errors import BrainMRIError

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": models.resnet18,
    "vgg11": models.vgg11_bn,  # the study's VGG-11 is the batch-norm variant
    "densenet121": models.densenet121,
}


def unknown_architecture(arch: str) -> str:
    return f"Unknown model architecture '{arch}'. Choose one of: {', '.join(sorted(BACKBONES))}."


def build_backbone(arch: str, num_classes: int) -> nn.Module:
    """The network for ``arch`` with a ``num_classes``-way classifier, weights random (as in the study)."""
    if arch not in BACKBONES:
        raise BrainMRIError(unknown_architecture(arch))
    if num_classes < 2:
        raise BrainMRIError(f"num_classes must be at least 2, got {num_classes}.")
    return BACKBONES[arch](weights=None, num_classes=num_classes)
