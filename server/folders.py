"""The data folder's writability, checked when `c2seg serve` starts and by every `/healthz`: a
server that cannot write its spool or its stored submissions would otherwise say it is healthy
and then fail every upload."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .config import Settings


def unwritable(folder: Path) -> str | None:
    """None if a file can be created in `folder` (made if missing), else why not, in a few words.
    A real write, not os.access: permission bits say nothing to root, nor about a read-only mount."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def data_folder_problem(settings: Settings) -> str | None:
    """'FOLDER: why' for the first folder of the server's that cannot be written, else None."""
    for folder in (settings.spool_dir, settings.storage_dir):
        why = unwritable(folder)
        if why is not None:
            return f"{folder}: {why}"
    return None


_last: tuple[float, str | None] = (float("-inf"), None)


def cached_problem(settings: Settings, max_age_s: float = 1.0) -> str | None:
    """data_folder_problem at most once a second per process (/healthz is public: asking it many
    times must not make the server write many files)."""
    global _last
    now = time.monotonic()
    if now - _last[0] >= max_age_s:
        _last = (now, data_folder_problem(settings))
    return _last[1]
