"""The one exception type the entry points turn into a plain message instead of a traceback."""

import sys
from typing import NoReturn


class BrainMRIError(Exception):
    """A problem with the user's input or environment (data, config, checkpoint), explained in words."""


def user_error(err: BaseException | None) -> BrainMRIError | None:
    """The user-facing error behind ``err``: itself, or the one Hydra wrapped while instantiating a
    config node (``InstantiationException``); None when there is none."""
    while err is not None and not isinstance(err, BrainMRIError):
        err = err.__cause__
    return err


def print_undecodable_escaped() -> None:
    """File names that are not UTF-8 (kept byte for byte) are printed with escapes, never a crash."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def stop(message: object) -> NoReturn:
    """End a script with one line on standard error and exit status 1: a user's error, no traceback."""
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(1)
