"""What the Hydra entry points share: run a task and turn a BrainMRIError into one plain message."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from brain_mri.errors import BrainMRIError

log = logging.getLogger(__name__)


def run_task(task: Callable[[DictConfig], object], cfg: DictConfig):
    """Run ``task(cfg)``; a user-input problem ends the process with its message, not a traceback."""
    try:
        return task(cfg)
    except BrainMRIError as err:
        log.debug("Stopped by a user-facing error", exc_info=True)  # the full trace stays in the job log
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every entry of a config group such as ``callbacks`` or ``logger`` (entries may be null)."""
    if not group:
        return []
    return [hydra.utils.instantiate(entry) for entry in group.values() if entry and "_target_" in entry]
