"""Third-party messages that say nothing to a user of this project, silenced one by one: each by its
exact text and the module that issues it, never a whole category, so any other warning still shows.

What this project's own configuration caused is fixed where it arises instead (one model summary, a
prediction writer that needs no batch indices, an example input that gives the summary its FLOPs)."""

from __future__ import annotations

import logging
import warnings

# (message at its start, module that issues it): what each one says is either wrong here or an advert
WARNINGS = (
    # torch's pytree API, used inside Lightning: nothing a user can change
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree"),
    # the summary counts parameters, which bf16 does not change
    (
        r"Precision bf16-mixed is not supported by the model summary",
        r"lightning\.pytorch\.utilities\.model_summary",
    ),
    # on any machine with Slurm installed, also for runs that are not Slurm jobs
    (
        r"The `srun` command is available on your system but is not used",
        r"lightning\.fabric\.plugins\.environments\.slurm",
    ),
    # export=torchscript is what it is: TorchScript, deprecated upstream in favour of torch.export
    (r"`torch\.jit\.(trace|trace_method|save|load)` is deprecated", r"torch\.jit\."),
)

# Lightning's adverts for its cloud services, logged at INFO on every run
LIGHTNING_TIPS = "💡 Tip: For seamless cloud"


def not_an_advert(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(LIGHTNING_TIPS)


def silence_third_party_noise() -> None:
    """Install the filters (idempotent: warnings and logging drop repeated filters)."""
    for message, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(not_an_advert)
    # Optuna's database storage logs each step of its schema migration (seven lines per search)
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
