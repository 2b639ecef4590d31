"""Files the organizer verbs write (`c2seg admin fetch --out`, `c2seg admin export --out`).

Organizers run these verbs as whatever user holds the database, root included, so the output
name is handled with care: only a regular file is ever written, never through a symbolic link
and never over a device, a pipe, a socket or a folder (`--force` included: it replaced
/dev/full once); an existing regular file is replaced only with `--force`. The file is
written under a temporary name beside it and renamed into place when complete (the core's
c2seg_kit.fsutil / writers helpers), so a failure leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from c2seg_kit.errors import C2SegError


def refuse_unless_replaceable(path: Path, force: bool) -> None:
    """C2SegError unless `path` is free, or (with `force`) a regular file that may be replaced."""
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
        raise C2SegError(f"{path} exists; give --force to replace it")


@contextlib.contextmanager
def output_file(path: str | os.PathLike, *, force: bool, mode: str = "wb", **open_kw):
    """Open a temporary file beside `path` for writing; on a clean exit it takes `path`'s name
    (see the module's docstring for what is refused, before anything is written and again just
    before the rename). An exception inside the block leaves `path` as it was."""
    from c2seg_kit.fsutil import temp_file_beside
    from c2seg_kit.submission.writers import publish

    path = Path(path)
    refuse_unless_replaceable(path, force)
    if not path.parent.is_dir():
        raise C2SegError(f"output folder {path.parent} does not exist")
    try:
        tmp = temp_file_beside(path)
    except OSError as e:
        raise C2SegError(f"cannot write in {path.parent}: {e.strerror or e}") from None
    try:
        with open(tmp, mode, **open_kw) as f:
            yield f
        refuse_unless_replaceable(path, force)  # what appeared meanwhile is checked again
        publish(tmp, path, overwrite=force)  # without force: never over a name taken meanwhile
    finally:
        tmp.unlink(missing_ok=True)
