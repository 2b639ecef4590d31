"""Checks on the file's bytes that run before (or beside) HDF5: the signature, the superblock's
size of lengths, and a walk of every global heap collection. Plain reads only: HDF5 parses none
of this until these checks have passed."""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Iterator
from typing import Any

from c2seg_kit.h5safe.limits import Context

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class RawFile:
    """Plain byte reads from the file HDF5 will open (a path or a seekable file object)."""

    def __init__(self, source: Any) -> None:
        self._lock = threading.Lock()
        if hasattr(source, "read"):
            self._fobj, self._fd = source, None
            source.seek(0, os.SEEK_END)
            self.size = source.tell()
        else:
            self._fobj, self._fd = None, os.open(os.fspath(source), os.O_RDONLY)
            self.size = os.fstat(self._fd).st_size

    @classmethod
    def open(cls, source: Any, ctx: Context) -> RawFile:
        """Open ``source`` for plain reads, refusing a missing path or a directory in one line."""
        if not hasattr(source, "read"):
            path = os.fspath(source)
            try:
                os.stat(path)
            except FileNotFoundError:
                raise ctx.error(f"{ctx.what} not found: {path}") from None
            if os.path.isdir(path):
                raise ctx.error(f"{ctx.what} is a directory, not a file: {path}")
        return cls(source)

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer at the end of the file)."""
        if self._fd is not None:
            return os.pread(self._fd, size, offset)
        with self._lock:
            self._fobj.seek(offset)
            return self._fobj.read(size)

    def read_at(self, offset: int, size: int, ctx: Context, name: str) -> bytes:
        """Exactly ``size`` bytes at ``offset``, or a refusal naming ``name``."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ctx.error(f"'{name}' has a chunk beyond the end of the file; the file is truncated or corrupt")
        data = self.pread(offset, size)
        if len(data) != size:
            raise ctx.error(f"'{name}' has a chunk beyond the end of the file; the file is truncated or corrupt")
        return data

    def find_all(self, needle: bytes) -> Iterator[int]:
        """Offsets of ``needle`` in the file (memory-mapped for paths, so nothing is copied)."""
        if self._fd is not None:
            if self.size == 0:
                return
            with mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ) as view:
                at = view.find(needle)
                while at >= 0:
                    yield at
                    at = view.find(needle, at + 1)
        else:
            with self._lock:
                self._fobj.seek(0)
                data = self._fobj.read()
            at = data.find(needle)
            while at >= 0:
                yield at
                at = data.find(needle, at + 1)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _superblock_offsets(size: int) -> Iterator[int]:
    """Where HDF5 looks for its signature: byte 0, then after a user block at 512, 1024, 2048, ..."""
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= size:
        yield offset
        offset = 512 if offset == 0 else offset * 2


def check_signature(raw: RawFile, ctx: Context) -> None:
    """Not empty, and an HDF5 signature where HDF5 would look for one."""
    if raw.size == 0:
        raise ctx.error(f"{ctx.what} is empty (0 bytes)")
    if not any(raw.pread(at, len(HDF5_SIGNATURE)) == HDF5_SIGNATURE for at in _superblock_offsets(raw.size)):
        raise ctx.error(f"{ctx.what} is not an HDF5 file (no HDF5 signature)")


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _sizeof_lengths(raw: RawFile, ctx: Context) -> int:
    """The superblock's "size of lengths" (8 for files h5py writes)."""
    for base in _superblock_offsets(raw.size):
        if base + 16 > raw.size:
            break
        head = raw.read_at(base, 16, ctx, ctx.what)
        if head[:8] == HDF5_SIGNATURE:
            version = head[8]
            size = head[14] if version in (0, 1) else head[10]
            if size not in (2, 4, 8, 16, 32):
                raise ctx.error(f"{ctx.what} is not a readable HDF5 file (corrupt superblock)")
            return size
    raise ctx.error(f"{ctx.what} is not an HDF5 file (no HDF5 signature)")


def check_global_heaps(raw: RawFile, ctx: Context) -> None:
    """Walk every global heap collection (where variable-length strings live) the way HDF5 will,
    refusing one whose object sizes would not lead to its end.

    HDF5 parses a collection the first time a string in it is read; a damaged object size there
    (a free-space object of size 0, say) sends it into an endless loop, in C, that no timeout in
    this process can stop. Each step of this walk advances at least one object header, so it ends.
    """
    what = ctx.what
    length = _sizeof_lengths(raw, ctx)
    header = _align8(8 + length)  # "GCOL", version, 3 reserved, collection size
    obj_header = _align8(8 + length)  # index, reference count, 4 reserved, object size
    for at in raw.find_all(b"GCOL"):
        if at + header > raw.size:
            continue
        head = raw.read_at(at, header, ctx, what)
        if head[4] != 1:
            continue  # not a collection HDF5 would accept; it refuses other versions itself
        size = int.from_bytes(head[8 : 8 + length], "little")
        if size < header or at + size > raw.size:
            raise ctx.error(f"{what} is corrupt: a global heap collection runs past the end of the file")
        data = raw.read_at(at, size, ctx, what)
        p = header
        while p + obj_header <= size:
            index = int.from_bytes(data[p : p + 2], "little")
            obj_size = int.from_bytes(data[p + 8 : p + 8 + length], "little")
            need = obj_header + _align8(obj_size) if index else obj_size
            if need < obj_header or (index == 0 and obj_size % 8) or p + need > size:
                raise ctx.error(f"{what} is corrupt: damaged global heap (variable-length strings)")
            p += need
