"""Third-party messages that say nothing to a user of this project, silenced one by one: each by its
exact text and the module that issues it, never a whole category, so any other warning still shows.

What this project's own configuration caused is fixed where it arises instead (one model summary, a
prediction writer that needs no batch indices, an example input that gives the summary its FLOPs)."""

from __future__ import annotations

import logging
import re
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

# (logger, pattern the message starts with): notices logged on every run, search or poll
NOTICES = (
    ("lightning.pytorch.utilities.rank_zero", "💡 Tip: For seamless cloud"),  # Lightning's adverts
    ("alembic.runtime.plugins", "setup plugin "),  # seven lines when Optuna imports its storage
    ("alembic.runtime.migration", "Context impl "),  # a database storage's schema set-up
    ("alembic.runtime.migration", "Will assume "),
    # submitit asks sacct for its jobs' states at every poll; on a cluster without accounting (the local
    # one) sacct refuses, and submitit follows its jobs by their result files instead
    ("submitit", r"Call #\d+ - Bypassing sacct error Command '\['sacct', "),
)


def silence_third_party_noise() -> None:
    """Install the filters (idempotent: warnings and logging drop repeated filters)."""
    for message, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    for name in {logger for logger, _ in NOTICES}:
        logging.getLogger(name).addFilter(not_a_notice)


def not_a_notice(record: logging.LogRecord) -> bool:
    return not any(record.name == logger and re.match(start, str(record.msg)) for logger, start in NOTICES)
