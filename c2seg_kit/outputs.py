"""The one module that writes the files and folders that become the user's own.

Every verb that writes an output follows one rule, and this module is the only place that spells it:

- a file (:func:`claim_file`): a new name, or (only with ``force``) an existing regular file; never
  one of the command's inputs or a file inside an input folder, even with ``force``; never through
  or over a symbolic link, and never over a folder, a device, a pipe or a socket (``--force``
  included: replacing /dev/full is not writing a file);
- a folder (:func:`claim_folder`): a new or empty one, or one the kit made before, recognised by
  the marker file the kit wrote into it;
- published atomically (:func:`publish`, :func:`publish_folder`): the content is written under a
  temporary name beside the target and given the target's name in one step once complete, after
  the rule is checked again (something may have appeared meanwhile); a failure leaves the target
  as it was. :func:`new_file` and :func:`output_file` do the three steps around a ``with`` block.

``tempfile.mkstemp``/``mkdtemp`` create temporary names with mode 0600/0700 whatever the umask, so a
submission, a labels file or a tile folder would end up readable by its owner alone (a server
running as another user could not read them). The temporary names made here get the mode any other
tool would give the finished file: 0666 (files) or 0777 (folders) less the umask.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from c2seg_kit.errors import C2SegError

__all__ = ["PendingFile", "claim_file", "claim_folder", "clear_entries", "current_umask", "new_file", "open_log", "output_file", "publish", "publish_folder",
           "temp_dir_in", "temp_file_beside", "write_text"]

_UMASK_LOCK = threading.Lock()

#: What an existing output's refusal suggests, unless the caller says otherwise.
ADVICE = "choose another --out, or --force"

Inputs = Iterable["str | os.PathLike | None"]


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
    created file gets under the umask; the caller writes it and :func:`publish` gives it ``path``."""
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


# --- files -------------------------------------------------------------------------------------


def _is_or_inside(target: Path, given: Path) -> bool:
    """Whether ``target`` (an existing path) is the input ``given`` or a file inside that folder."""
    try:
        if given.exists() and os.path.samefile(target, given):
            return True
    except OSError:
        pass
    resolved = given.resolve()
    return target == resolved or (resolved.is_dir() and resolved in target.parents)


def _refuse_taken(path: Path, force: bool, advice: str) -> None:
    """The part of the rule that looks at what holds ``path`` now (nothing is fine)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise C2SegError(f"cannot write {path}: {e.strerror or e}") from None
    if stat.S_ISLNK(st.st_mode):
        raise C2SegError(f"{path} is a symbolic link: it is neither written through nor replaced; "
                         "give the path of a regular file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, pipe or socket)"
        raise C2SegError(f"{path} is {kind}: it is not replaced; give the path of a regular file")
    if not force:
        raise C2SegError(f"{path} already exists; it was left as it is ({advice})")


def claim_file(path: str | os.PathLike, *, force: bool, inputs: Inputs = (), need_folder: bool = False,
               advice: str = ADVICE) -> Path:
    """Check, before anything is written, that ``path`` may receive an output file (the module's rule);
    returns it as a Path. ``need_folder``: the folder it goes in must exist already."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        target = path.resolve()
        for given in inputs:
            if given is not None and _is_or_inside(target, Path(given)):
                raise C2SegError(f"{path} is an input of this command ({given}); an input is never written over, "
                                 "even with --force: choose another --out")
    _refuse_taken(path, force, advice)
    if need_folder and not path.parent.is_dir():
        raise C2SegError(f"output folder {path.parent} does not exist")
    return path


def publish(tmp: str | os.PathLike, path: str | os.PathLike, *, overwrite: bool = True) -> None:
    """Give the finished temporary file ``tmp`` its name ``path`` in one step, after checking the rule
    again (a link, a folder or a special file that appeared meanwhile is refused).

    With ``overwrite`` an existing regular file is replaced; without, the name is taken only if it
    is free at that very moment (a hard link fails on an existing name), so a file that appeared
    meanwhile is never clobbered.
    """
    tmp, path = Path(tmp), Path(path)
    _refuse_taken(path, True, ADVICE)
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise C2SegError(f"{path} already exists; it was left as it is") from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists() or path.is_symlink():
            raise C2SegError(f"{path} already exists; it was left as it is") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


class PendingFile:
    """An output file being written: :attr:`tmp`, a temporary file beside :attr:`path` (the rule was
    checked first, :func:`claim_file`), then :meth:`commit` gives it the name (:func:`publish`) or
    :meth:`discard` removes it. For writers that outlive one ``with`` block; else :func:`new_file`.
    ``need_folder=False`` creates the folder."""

    def __init__(self, path: str | os.PathLike, *, force: bool = True, inputs: Inputs = (),
                 need_folder: bool = False, advice: str = ADVICE) -> None:
        self.path = claim_file(path, force=force, inputs=inputs, need_folder=need_folder, advice=advice)
        self.force = force
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = temp_file_beside(self.path)
        except OSError as e:
            raise C2SegError(f"cannot write in {self.path.parent}: {e.strerror or e}") from None

    def commit(self) -> Path:
        """The finished file takes its name (without ``force``, never over a name taken meanwhile)."""
        try:
            publish(self.tmp, self.path, overwrite=self.force)
        finally:
            self.discard()
        return self.path

    def discard(self) -> None:
        """The temporary file goes (after :meth:`commit`, nothing is left to remove)."""
        self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def new_file(path: str | os.PathLike, *, force: bool = True, inputs: Inputs = (), need_folder: bool = False,
             advice: str = ADVICE) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write (by name); on a clean exit it takes
    ``path``'s name (:func:`publish`), on an exception it goes and ``path`` is as it was
    (:class:`PendingFile`)."""
    pending = PendingFile(path, force=force, inputs=inputs, need_folder=need_folder, advice=advice)
    try:
        yield pending.tmp
    except BaseException:
        pending.discard()
        raise
    pending.commit()


@contextlib.contextmanager
def output_file(path: str | os.PathLike, *, force: bool, mode: str = "wb", inputs: Inputs = (),
                need_folder: bool = True, **open_kw):
    """:func:`new_file`, opened: the block writes into the file object it is given."""
    with new_file(path, force=force, inputs=inputs, need_folder=need_folder) as tmp, open(tmp, mode, **open_kw) as f:
        yield f


def write_text(path: str | os.PathLike, text: str, *, force: bool = True, inputs: Inputs = ()) -> Path:
    """``text`` as the file ``path``, published atomically (:func:`new_file`)."""
    with output_file(path, force=force, mode="w", inputs=inputs, need_folder=False) as f:
        f.write(text)
    return Path(path)


def open_log(path: str | os.PathLike, *, append: bool = False, force: bool = True):
    """A log file opened for writing line by line (``append``: after what it holds), in a folder the
    kit claimed. A log is written as things happen, so it is not published atomically, but the file
    rule holds: never through a link, never over a folder or a special file, never over a file that
    exists unless ``force`` (or ``append``)."""
    path = claim_file(path, force=force or append)
    return open(path, "a" if append else "w", buffering=1)


# --- folders -----------------------------------------------------------------------------------


def claim_folder(path: str | os.PathLike, *, verb: str, marker: str | None = None,
                 ours: Callable[[Path], bool] | None = None, force: bool = False,
                 ignore: Callable[[str], bool] | None = None, follow_link: bool = True) -> str:
    """Check, before anything is written, that ``path`` may receive what ``c2seg VERB`` writes into a
    folder: returns "new" (nothing there), "empty", or "ours" (a folder holding ``marker``, written
    by an earlier run of the verb; ``ours(marker_path)`` may look into it; without ``force`` the
    marker file's rule applies, so the earlier output is replaced only with --force). Entries for
    which ``ignore(name)`` holds do not count (an interrupted run's staging). A symbolic link to a
    folder counts as that folder (a cache on another disk), unless ``follow_link`` is off (a folder
    published by renaming, which would not go through the link). Anything else: one line."""
    path = Path(path)
    if (path.is_symlink() and not (follow_link and path.exists())) or (path.exists() and not path.is_dir()):
        raise C2SegError(f"{path} exists and is not a folder; {verb} writes into a new or empty folder "
                         "(nothing was changed)")
    if not path.exists():
        return "new"
    entries = [e for e in os.listdir(path) if ignore is None or not ignore(e)]
    if not entries:
        return "empty"
    mark = path / marker if marker is not None else None
    if mark is None:
        raise C2SegError(f"{path} is not empty; {verb} writes into a new or empty folder (nothing was changed)")
    if not (mark.is_file() and not mark.is_symlink() and (ours is None or ours(mark))):
        raise C2SegError(f"{path} is not empty and was not written by `c2seg {verb}` (no {marker} of its own); "
                         "choose a new or empty folder (nothing was changed)")
    claim_file(mark, force=force)
    return "ours"


def publish_folder(partial: str | os.PathLike, path: str | os.PathLike, *, verb: str) -> None:
    """Give the finished temporary folder ``partial`` (made by :func:`temp_dir_in` beside ``path``)
    the name ``path`` in one step, after checking again that ``path`` is new or empty (a rename
    takes a new name or replaces an empty folder, never anything else)."""
    claim_folder(path, verb=verb, follow_link=False)
    os.rename(partial, path)


def clear_entries(folder: Path, names: Iterable[str]) -> None:
    """Remove the entries ``names`` of a folder :func:`claim_folder` found to be ``ours`` (what an
    earlier run of the verb wrote there), and nothing else; a link is removed, never followed."""
    for name in names:
        entry = folder / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()
