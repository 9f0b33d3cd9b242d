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

# Interruptions (SIGTERM) that arrived while a file was being written, raised once the write has ended:
# raised inside it, they would leave the writer's own state (a library's transaction) half done.
_writes_in_progress = 0
_deferred: list[BaseException] = []


def interrupt_between_writes(interruption: BaseException) -> None:
    """For a signal handler: raise ``interruption`` now, or at the end of the write in progress."""
    if _writes_in_progress:
        _deferred.append(interruption)
        return
    raise interruption


@contextmanager
def atomic_path(path: str | Path, needed: int | None = None) -> Iterator[Path]:
    """Yields the temporary path to write (beside ``path``, hidden, with its suffix, which some writers
    read the format from); renames it into place when the block ends without an error, else removes it.
    A full disk is one message that names the file and, given ``needed`` (bytes), the space it needs.
    An interruption that arrives meanwhile (:func:`interrupt_between_writes`) is raised after it."""
    global _writes_in_progress
    _writes_in_progress += 1
    try:
        with _temporary_beside(Path(path), needed) as temporary:
            yield temporary
    finally:
        _writes_in_progress -= 1
        if not _writes_in_progress and _deferred:
            interruption = _deferred.pop()
            _deferred.clear()
            raise interruption


@contextmanager
def _temporary_beside(path: Path, needed: int | None) -> Iterator[Path]:
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
