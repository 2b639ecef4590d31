"""Checks on the file's bytes that run before (or beside) HDF5: a regular file, the signature, the
superblock's size of lengths, and a walk of every global heap collection. Plain reads only (no
memory map: a file cut short while it is mapped kills the process with SIGBUS), and each check
runs in time linear in the file size, so any file under the upload cap is judged in about a
second."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from typing import Any

from c2seg_kit.h5safe.limits import Context

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SCAN_BLOCK = 4 << 20  # bytes per read while scanning the file for a magic


class RawFile:
    """Plain byte reads from the file HDF5 will open (a path or a seekable file object).

    ``size`` is the size when opened; a read that finds the file shorter refuses it (it changed
    while it was read). ``bytes_read`` counts every byte read here: the work the checks did.
    """

    def __init__(self, source: Any, ctx: Context, fd: int | None = None) -> None:
        self.ctx = ctx
        self.bytes_read = 0
        self._lock = threading.Lock()
        self._fobj, self._fd = (source, None) if fd is None else (None, fd)
        self.size = self._current_size()

    @classmethod
    def open(cls, source: Any, ctx: Context) -> RawFile:
        """Open ``source``; a path must name a regular file. Never blocks: a FIFO or a device is
        refused in one line, not opened for a read that waits for a writer for ever."""
        if hasattr(source, "read"):
            return cls(source, ctx)
        path = os.fspath(source)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise ctx.error(f"{ctx.what} not found: {path}") from None
        except IsADirectoryError:
            raise ctx.error(f"{ctx.what} is a directory, not a file: {path}") from None
        except OSError as e:
            raise ctx.error(f"{ctx.what} cannot be opened ({e.strerror}): {path}") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            if stat.S_ISDIR(mode):
                raise ctx.error(f"{ctx.what} is a directory, not a file: {path}")
            raise ctx.error(f"{ctx.what} is not a regular file (a pipe, socket or device): {path}")
        return cls(source, ctx, fd)

    def _current_size(self) -> int:
        if self._fd is not None:
            return os.fstat(self._fd).st_size
        with self._lock:
            return self._fobj.seek(0, os.SEEK_END)

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer at the end of the file)."""
        if self._fd is not None:
            data = os.pread(self._fd, size, offset)
        else:
            with self._lock:
                self._fobj.seek(offset)
                data = self._fobj.read(size)
        self.bytes_read += len(data)
        return data

    def read_at(self, offset: int, size: int, name: str) -> bytes:
        """Exactly ``size`` bytes at ``offset``, or a refusal naming ``name``."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise self.ctx.error(f"'{name}' has a chunk beyond the end of the file; the file is truncated or corrupt")
        data = self.pread(offset, size)
        if len(data) != size:
            self.check_unchanged()
            raise self.ctx.error(f"'{name}' has a chunk beyond the end of the file; the file is truncated or corrupt")
        return data

    def check_unchanged(self) -> None:
        """Refuse the file if its size changed since it was opened (cut short while being read:
        HDF5 reads zeros past the end, so data read since may be wrong)."""
        now = self._current_size()
        if now != self.size:
            raise self.ctx.error(
                f"{self.ctx.what} changed size while it was read ({self.size} -> {now} bytes); "
                "read it again once it is complete"
            )

    def find_all(self, needle: bytes) -> Iterator[int]:
        """Offsets of ``needle`` in the file, in order: one pass of block reads, each block read
        with the few bytes of overlap a match across the boundary needs."""
        overlap = len(needle) - 1
        for start in range(0, self.size, SCAN_BLOCK):
            want = min(SCAN_BLOCK + overlap, self.size - start)
            block = self.pread(start, want)
            if len(block) != want:
                self.check_unchanged()
            limit = min(SCAN_BLOCK, len(block))  # matches starting beyond it are the next block's
            at = block.find(needle, 0, limit + overlap)
            while 0 <= at < limit:
                yield start + at
                at = block.find(needle, at + 1, limit + overlap)

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
        head = raw.read_at(base, 16, ctx.what)
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
    this process can stop. A string may point at any collection the bytes declare, even one
    inside another, so each is walked on its own; the walk reads object headers only (never a
    whole collection), and the count of collections and of objects walked is bounded
    (``Limits.max_heap_collections``, ``max_heap_objects``), so the whole check costs one scan
    of the file plus a bounded number of small reads.
    """
    what, limits = ctx.what, ctx.limits
    length = _sizeof_lengths(raw, ctx)
    header = _align8(8 + length)  # "GCOL", version, 3 reserved, collection size
    obj_header = _align8(8 + length)  # index, reference count, 4 reserved, object size
    collections = objects = 0
    for at in raw.find_all(b"GCOL"):
        collections += 1
        if collections > limits.max_heap_collections:
            raise ctx.error(
                f"{what} declares more than {limits.max_heap_collections} global heap collections "
                "(where text attributes live); a submission needs a few"
            )
        if at + header > raw.size:
            continue
        head = raw.read_at(at, header, what)
        if head[4] != 1:
            continue  # not a collection HDF5 would accept; it refuses other versions itself
        size = int.from_bytes(head[8 : 8 + length], "little")
        if size < header or at + size > raw.size:
            raise ctx.error(f"{what} is corrupt: a global heap collection runs past the end of the file")
        p = header
        while p + obj_header <= size:
            objects += 1
            if objects > limits.max_heap_objects:
                raise ctx.error(
                    f"{what} declares more than {limits.max_heap_objects} objects in its global heaps "
                    "(where text attributes live); a submission needs a few"
                )
            obj = raw.read_at(at + p, obj_header, what)
            index = int.from_bytes(obj[0:2], "little")
            obj_size = int.from_bytes(obj[8 : 8 + length], "little")
            need = obj_header + _align8(obj_size) if index else obj_size
            if need < obj_header or (index == 0 and obj_size % 8) or p + need > size:
                raise ctx.error(f"{what} is corrupt: damaged global heap (variable-length strings)")
            p += need
