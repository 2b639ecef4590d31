"""Temporary names for files and folders that become the user's own, and the one rule every verb
that writes an output follows before writing it (:func:`refuse_existing`).

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
from collections.abc import Iterable
from pathlib import Path

from c2seg_kit.errors import C2SegError

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


def _is_or_inside(target: Path, given: Path) -> bool:
    """Whether ``target`` (an existing path) is the input ``given`` or a file inside that folder."""
    try:
        if given.exists() and os.path.samefile(target, given):
            return True
    except OSError:
        pass
    resolved = given.resolve()
    return target == resolved or (resolved.is_dir() and resolved in target.parents)


def refuse_existing(path: str | os.PathLike, force: bool, *,
                    inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """The rule every verb that writes an output follows, before anything is written: an existing
    ``path`` is refused unless ``force``; and never, even with ``force``, when it is one of the
    command's ``inputs`` or a file inside an input folder (a symbolic link is followed)."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return path
    target = path.resolve()
    for given in inputs:
        if given is not None and _is_or_inside(target, Path(given)):
            raise C2SegError(f"{path} is an input of this command ({given}); an input is never written over, "
                             "even with --force: choose another --out")
    if not force:
        raise C2SegError(f"{path} already exists; it was left as it is (choose another --out, or --force)")
    return path
