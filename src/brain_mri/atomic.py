"""The one way this project writes a file: to a temporary file beside it, renamed into place, so that a
reader (a report, a resume, another worker) sees the old file or the whole new one, never a half-written
one, even when the writer is killed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields the temporary path to write (beside ``path``, hidden, with its suffix, which some writers
    read the format from); renames it into place when the block ends without an error, else removes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
