"""Choices that depend on the machine, made once at start: numeric precision and memory pinning."""

from __future__ import annotations

import contextlib

import torch


def uses_cuda(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def best_precision(accelerator: str = "auto") -> str:
    """``bf16-mixed`` where the device computes bf16 natively, ``16-mixed`` on older GPUs, else ``32-true``.

    On CPUs, bf16 autocast is only fast with native bf16 instructions (AVX512-BF16, AMX); elsewhere it is
    emulated and slower than fp32, so fp32 is chosen.
    """
    if uses_cuda(accelerator):
        if not torch.cuda.is_available():
            return "bf16-mixed"  # a GPU was asked for on a machine without one: Lightning will say so
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"


# the precisions a checkpoint may record (Lightning's names; the short ones are what Lightning stores)
PRECISIONS = (
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "16",
    "bf16",
    "32",
    "64",
)


def precision_available(precision: str, accelerator: str = "auto") -> bool:
    """Whether this machine computes ``precision`` natively (half precision: on GPUs; bf16: where
    :func:`best_precision` would choose it)."""
    if precision.startswith("bf16"):
        return best_precision(accelerator) == "bf16-mixed"
    if precision.startswith("16"):
        return uses_cuda(accelerator) and torch.cuda.is_available()
    return True


def precision_for_checkpoint(trained: str | None, accelerator: str = "auto") -> tuple[str, str | None]:
    """The precision to evaluate a checkpoint with: the one it was trained with, so evaluation repeats the
    run's numbers, unless this machine lacks it. Returns (precision, a note for the log or None)."""
    if trained is None:
        return best_precision(accelerator), "the checkpoint does not record its precision"
    if precision_available(trained, accelerator):
        return trained, None
    chosen = best_precision(accelerator)
    return chosen, f"it was trained with {trained}, which this machine lacks; results may differ slightly"


def autocast(precision: str, device: str = "cpu"):
    """The autocast of a Lightning mixed precision, for the loops that run without a Trainer."""
    if precision.startswith("bf16"):
        return torch.autocast(device, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device, dtype=torch.float16)
    return contextlib.nullcontext()
