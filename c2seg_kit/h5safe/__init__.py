"""A defensive reader for 2-D integer rasters in an untrusted HDF5 file.

Submissions are written by the people a leaderboard ranks, so the file is treated as hostile.
:func:`open_checked` is the one way in; it runs every whole-file check in one fixed order before
the caller reads anything:

1. the bytes (:mod:`.rawbytes`): a regular file (never a FIFO or device, which would block),
   not empty, an HDF5 signature;
2. HDF5 opens the file (under the address-space guard of :mod:`.limits`);
3. every global heap collection is walked the way HDF5 would parse it (:mod:`.rawbytes`), in
   time linear in the file size;
4. the links on the paths the caller will read, the root's attribute count, the caller's
   ``wide_groups`` (which may read root attributes to decide which groups hold many members),
   then the whole tree (:mod:`.structure`): every link is inspected *itself* and only hard links
   are entered, so soft, external and user-defined links are refused, never followed; bounded
   object count (a wide group's members: ``Limits.max_group_members``), depth and attributes;
   every dataset's storage: no virtual layout, no external raw storage, only the built-in filters
   (deflate, shuffle, fletcher32, lzf), so HDF5 never searches for a plugin;
5. the caller's own checks (``inspect``): its attributes, and each raster through
   :meth:`CheckedFile.raster` (an integer type, rank 2, not empty, a fixed maxshape, the expected
   shape or a size cap, sane chunks), which hands back a :class:`RasterReader`.

:func:`read_root` runs steps 1 to 3 only, then reads root attributes: enough to learn what a file
says it is (its track, say) without walking its tree.

Steps 2, 4 and 5 run under the memory guard, and anything HDF5 raises there becomes a one-line
refusal of the caller's error class. Data is then read in row bands (:mod:`.chunks`), and a
file cut short while it is read is refused. A file holding several rasters (one per tile, say)
checks each through :meth:`CheckedFile.raster` (or :func:`check_raster`, keeping the layout and
making the reader with :meth:`CheckedFile.reader` when the raster is read). Every step costs time
linear in the file's size or its number of links.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO, TypeVar

import h5py

from c2seg_kit.errors import C2SegError
from c2seg_kit.h5safe.chunks import RasterReader
from c2seg_kit.h5safe.limits import DEFAULT_LIMITS, Context, Limits, memory_guard
from c2seg_kit.h5safe.rawbytes import HDF5_SIGNATURE, RawFile, check_global_heaps, check_signature
from c2seg_kit.h5safe.structure import (
    ALLOWED_FILTERS,
    RasterLayout,
    check_attr_count,
    check_links,
    check_raster,
    check_tree,
    decode_name,
    member_names,
    open_member,
    read_str_attr,
)

__all__ = [
    "ALLOWED_FILTERS",
    "DEFAULT_LIMITS",
    "HDF5_SIGNATURE",
    "CheckedFile",
    "Context",
    "Limits",
    "RasterLayout",
    "RasterReader",
    "RawFile",
    "check_raster",
    "decode_name",
    "member_names",
    "memory_guard",
    "open_member",
    "open_checked",
]

T = TypeVar("T")

# What HDF5 (through h5py) raises on a damaged structure; its own text may quote the file, so
# it is replaced by one line of ours.
_HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, OverflowError, MemoryError)


class CheckedFile:
    """An HDF5 file that passed the whole-file checks, with the plain-byte view beside it."""

    def __init__(self, file: h5py.File, raw: RawFile, ctx: Context) -> None:
        self.file = file
        self.raw = raw
        self.ctx = ctx

    def str_attr(self, key: str, obj: Any = None) -> str | None:
        """A short text attribute of ``obj`` (default: the root), or None when it is absent."""
        return read_str_attr(self.file if obj is None else obj, key, self.ctx)

    def raster(self, dset: h5py.Dataset, name: str, *, expected_shape: tuple[int, int] | None = None,
               max_pixels: int | None = None) -> RasterReader:
        """Check one 2-D integer raster's type, space and storage; a reader for its row bands."""
        layout = check_raster(dset, name, self.ctx, expected_shape=expected_shape, max_pixels=max_pixels)
        return self.reader(dset, layout, name)

    def reader(self, dset: h5py.Dataset, layout: RasterLayout, name: str) -> RasterReader:
        """A row-band reader for a raster whose ``layout`` :func:`check_raster` returned."""
        return RasterReader(dset, layout, name, self.ctx, raw=self.raw)

    def close(self) -> None:
        self.file.close()
        self.raw.close()

    def __enter__(self) -> CheckedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_hdf5(source: Any, ctx: Context) -> h5py.File:
    target = source if hasattr(source, "read") else os.fspath(source)
    try:
        return h5py.File(target, "r", locking=False)
    except MemoryError:
        raise ctx.error(f"{ctx.what} is not a readable HDF5 file (its header declares absurd sizes)") from None
    except OSError as e:
        text = str(e).lower()
        if "truncated" in text or "eof" in text:
            raise ctx.error(f"{ctx.what} is truncated (the HDF5 header declares more bytes than the file has)") from None
        raise ctx.error(f"{ctx.what} is not a readable HDF5 file (corrupt or unsupported header)") from None


def _open_raw_and_hdf5(source: str | os.PathLike | BinaryIO, ctx: Context) -> tuple[RawFile, h5py.File]:
    """Steps 1 and 2: the bytes (signature first), then HDF5's open under the memory guard;
    on a refusal nothing stays open."""
    raw = RawFile.open(source, ctx)
    try:
        check_signature(raw, ctx)
        with memory_guard(ctx.limits.memory_guard_bytes):
            return raw, _open_hdf5(source, ctx)
    except BaseException:
        raw.close()
        raise


def read_root(source: str | os.PathLike | BinaryIO, ctx: Context, read: Callable[[CheckedFile], T]) -> T:
    """Steps 1 to 3 of :func:`open_checked` (bytes, HDF5 open, global heaps), the root's attribute
    count, then ``read(checked)`` (which reads root attributes with :meth:`CheckedFile.str_attr`)
    under the same guard; the file is closed before returning. Costs one scan of the bytes, however
    many objects the file declares, so a server can pick what to check a file against cheaply."""
    raw, file = _open_raw_and_hdf5(source, ctx)
    with CheckedFile(file, raw, ctx) as checked:
        check_global_heaps(raw, ctx)
        try:
            with memory_guard(ctx.limits.memory_guard_bytes):
                check_attr_count(file, "/", ctx)
                return read(checked)
        except C2SegError:
            raise
        except _HDF5_ERRORS:
            raise ctx.error(f"{ctx.what} is corrupt: HDF5 could not read its structure") from None


def open_checked(source: str | os.PathLike | BinaryIO, ctx: Context, *, reads: Iterable[str] = (),
                 root: Callable[[CheckedFile], Context | None] | None = None,
                 wide_groups: Callable[[CheckedFile], Iterable[str]] | None = None,
                 inspect: Callable[[CheckedFile], None] | None = None) -> CheckedFile:
    """Open ``source`` (a path or a seekable binary file object) read-only and run every check in
    the order the module docstring gives; refusals raise ``ctx.error`` with one line.

    ``reads``: the paths the caller will read, whose links are checked first so that a link
    there is named before anything else is found. ``root``: called first, as :func:`read_root`
    calls its reader (after the global heaps and the root's attribute count, before the links),
    to learn what the file says it is in the same open; it may return the context the remaining
    checks run under (tighter limits, say). ``wide_groups``: called before the tree walk
    (the root's attributes may be read by then); returns the groups whose direct members count
    against ``Limits.max_group_members`` rather than ``max_objects``. ``inspect``: the caller's own
    checks, run last under the same guard. The file is closed on any refusal; on success the
    caller closes it.
    """
    raw, file = _open_raw_and_hdf5(source, ctx)
    checked = CheckedFile(file, raw, ctx)
    try:
        check_global_heaps(raw, ctx)
        with memory_guard(ctx.limits.memory_guard_bytes):
            if root is not None:
                check_attr_count(file, "/", ctx)
                ctx = checked.ctx = root(checked) or ctx
            for path in reads:
                check_links(file, path, ctx)
            check_attr_count(file, "/", ctx)
            wide = tuple(wide_groups(checked)) if wide_groups is not None else ()
            check_tree(file, ctx, wide)
            if inspect is not None:
                inspect(checked)
    except C2SegError:
        checked.close()
        raise
    except _HDF5_ERRORS:
        checked.close()
        raise ctx.error(f"{ctx.what} is corrupt: HDF5 could not read its structure") from None
    except BaseException:
        checked.close()
        raise
    return checked
