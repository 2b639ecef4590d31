"""Temporary names for files and folders that become the user's own.

The kit writes every output under a temporary name and renames it into place when complete.
``tempfile.mkstemp``/``mkdtemp`` create those names with mode 0600/0700 whatever the umask, so a
submission, a labels file or a tile folder would end up readable by its owner alone (a server
running as another user could not read them). These helpers give the temporary name the mode
any other tool would give the finished file: 0666 (files) or 0777 (folders) less the umask.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read from /proc on Linux; elsewhere set and restored under a lock)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def temp_file_beside(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """An empty file in ``path``'s folder, named ``.<name>.<random><suffix>``, with the mode a newly
    created file gets under the umask; the caller writes it and renames it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    return Path(tmp)


def temp_dir_in(parent: str | os.PathLike, prefix: str) -> Path:
    """A new empty folder in ``parent`` with the mode a newly created folder gets under the umask."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp
