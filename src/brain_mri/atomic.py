"""The one way this project writes a file: to a temporary file beside it, renamed into place, so that a
reader (a report, a resume, another worker) sees the old file or the whole new one, never a half-written
one, even when the writer is killed."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from brain_mri.errors import BrainMRIError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def atomic_path(path: str | Path, needed: int | None = None) -> Iterator[Path]:
    """Yields the temporary path to write (beside ``path``, hidden, with its suffix, which some writers
    read the format from); renames it into place when the block ends without an error, else removes it.
    A full disk is one message that names the file and, given ``needed`` (bytes), the space it needs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # short, whatever the name's length (a file system allows 255 bytes), with the suffix some writers need
    tag = hashlib.sha1(path.name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    temporary = path.with_name(f".{tag}.{os.getpid()}.tmp{path.suffix[:16]}")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as err:
        if err.errno in DISK_FULL:
            raise disk_full(path, needed) from None
        raise
    finally:
        temporary.unlink(missing_ok=True)


# Interruptions (SIGTERM) that arrived while another library wrote a file, raised once it has finished:
# raised inside it, they would leave its own state (a transaction) half done.
_deferring = 0
_deferred: list[BaseException] = []


def interrupt_between_writes(interruption: BaseException) -> None:
    """For a signal handler: raise ``interruption`` now, or at the end of a :func:`written_whole` block."""
    if _deferring:
        _deferred.append(interruption)
        return
    raise interruption


@contextmanager
def written_whole() -> Iterator[None]:
    """A short write that an interruption must not cut (a checkpoint through Lightning's file system
    layer); the interruption is raised when it has ended."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _deferred:
            interruption = _deferred.pop()
            _deferred.clear()
            raise interruption


def disk_full(path: str | Path, needed: int | None = None) -> BrainMRIError:
    """The message for a write that found its disk full: the file, the space free and needed."""
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    wanted = f", and it needs about {megabytes(needed)}" if needed else ""
    return BrainMRIError(
        f"The disk is full: {path} cannot be written ({megabytes(free)} free{wanted}). Free some space, or "
        "write elsewhere (hydra.run.dir=..., paths.log_dir=...); files written before it are whole, and a "
        "training run goes on with resume=<its folder>."
    )


def megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"
