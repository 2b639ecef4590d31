"""A defensive reader for one 2-D integer raster in an untrusted HDF5 file.

Submissions are written by the people a leaderboard ranks, so the file is treated as hostile.
Every check runs on metadata before any raster data is read:

- the bytes: not empty, an HDF5 signature, a superblock whose end-of-file is not beyond the file;
- the tree: walked one link at a time from the root; every link is inspected *itself*
  (``getlink=True`` on each component) and only hard links are entered, so soft, external and
  user-defined links are refused, never followed; bounded object count, depth and attributes;
- every dataset's storage: no virtual layout (it maps other files), no external raw storage,
  only the built-in filters (deflate, shuffle, fletcher32, lzf), so HDF5 never searches for a plugin;
- the raster: an integer type (not enum/bool, float, string, compound, array, opaque...),
  rank 2, not empty, a fixed maxshape, the expected shape (or a size cap), sane chunks.

Data is then read in row bands. Deflate chunks are inflated here with a hard output limit of the
chunk's own size, so a compression bomb is refused after costing one chunk of memory, exactly
like an honest file. Refusals raise the error class the caller chose, with a one-line message.
"""

from __future__ import annotations

import math
import mmap
import os
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import h5py
import numpy as np
from h5py import h5d, h5s, h5t, h5z

from c2seg_kit.errors import C2SegError

try:  # ISA-L's inflate is several times faster than zlib's and has the same streaming API
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - optional speed-up
    _inflate = zlib  # type: ignore[assignment]
_INFLATE_ERRORS = (zlib.error, _inflate.error)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
FILTER_LZF = 32000  # h5py's built-in LZF filter id

#: Filters HDF5 (or h5py) carry built in; any other id would make HDF5 go looking for a plugin.
ALLOWED_FILTERS = {
    h5z.FILTER_DEFLATE: "gzip",
    h5z.FILTER_SHUFFLE: "shuffle",
    h5z.FILTER_FLETCHER32: "fletcher32",
    FILTER_LZF: "lzf",
}

# Names for refused type classes, so the message says what was found.
_TYPE_CLASS_NAMES = {
    h5t.FLOAT: "floating point",
    h5t.ENUM: "enum (booleans are stored as enums)",
    h5t.STRING: "string",
    h5t.COMPOUND: "compound",
    h5t.ARRAY: "array (a sub-array dtype hides extra dimensions)",
    h5t.OPAQUE: "opaque",
    h5t.BITFIELD: "bitfield",
    h5t.REFERENCE: "reference",
    h5t.VLEN: "variable-length",
    h5t.TIME: "time",
}
if hasattr(h5t, "COMPLEX"):
    _TYPE_CLASS_NAMES[h5t.COMPLEX] = "complex"


@dataclass(frozen=True)
class Limits:
    """Bounds on what an untrusted file may declare. Honest files are far inside all of them."""

    max_objects: int = 64  # groups, datasets and named types in the whole file
    max_depth: int = 4  # group nesting below the root
    max_attrs: int = 32  # attributes on any one object
    max_attr_bytes: int = 4096  # size of an attribute the kit reads (track, team, ...)
    max_chunk_bytes: int = 16 << 20  # one chunk, decoded
    max_chunks: int = 100_000  # chunks in the grid: each costs a Python step when read
    # HDF5 decodes LZF chunks itself, growing its buffer up to LZF's worst ratio (~88x) of the
    # stored chunk, so LZF chunks get a tighter bound (h5py's automatic chunks are <= 1 MiB).
    max_lzf_chunk_bytes: int = 1 << 20
    # While HDF5 itself parses the file (structure, attributes, bands it decodes), the process may
    # grow its address space by at most this much; 0 turns the guard off. A damaged length field
    # (a variable-length string declaring 4 GB, say) then fails at once instead of allocating.
    memory_guard_bytes: int = 512 << 20
    band_bytes: int = 4 << 20  # target size of one row band read from unchunked storage


DEFAULT_LIMITS = Limits()


def _fmt_shape(shape: tuple) -> str:
    return " x ".join(str(int(s)) for s in shape) if len(shape) else "scalar"


def _disable_plugin_search() -> None:
    """Empty HDF5's plugin search path for this process: the kit never uses filter plugins, and
    an unknown filter id in a hostile file must never make HDF5 load code from disk."""
    try:
        from h5py import h5pl

        while h5pl.size():
            h5pl.remove(0)
    except (ImportError, AttributeError, RuntimeError):  # pragma: no cover - h5py without plugin support
        return


_disable_plugin_search()


_GUARD_LOCK = threading.Lock()
_GUARD_STATE = {"depth": 0, "saved": None}  # the limits to restore when the last guard exits


@contextmanager
def memory_guard(extra_bytes: int) -> Iterator[None]:
    """Cap the address space at its current size + ``extra_bytes`` for the duration (Linux).

    HDF5 allocates some buffers from lengths stored in the file before it can check them; under
    the cap such an allocation fails (and the file is refused) instead of costing gigabytes. The
    limit is process-wide: nested or concurrent guards share one cap, set by the first to enter
    and lifted by the last to leave. A server should still parse uploads in a child process.
    """
    if extra_bytes <= 0 or not sys.platform.startswith("linux"):
        yield
        return
    import resource

    with _GUARD_LOCK:
        if _GUARD_STATE["depth"] == 0:
            try:
                with open("/proc/self/status") as fh:
                    vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
                soft, hard = resource.getrlimit(resource.RLIMIT_AS)
                cap = vm + extra_bytes if hard == resource.RLIM_INFINITY else min(vm + extra_bytes, hard)
                if soft == resource.RLIM_INFINITY or soft > cap:  # else: already tighter than ours
                    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
                    _GUARD_STATE["saved"] = (soft, hard)
            except (OSError, StopIteration, ValueError):
                _GUARD_STATE["saved"] = None
        _GUARD_STATE["depth"] += 1
    try:
        yield
    finally:
        with _GUARD_LOCK:
            _GUARD_STATE["depth"] -= 1
            if _GUARD_STATE["depth"] == 0 and _GUARD_STATE["saved"] is not None:
                resource.setrlimit(resource.RLIMIT_AS, _GUARD_STATE["saved"])
                _GUARD_STATE["saved"] = None


# ---------------------------------------------------------------------------------------------
# Opening
# ---------------------------------------------------------------------------------------------


def _check_signature(fobj: BinaryIO, size: int, err: Callable[[str], C2SegError], what: str) -> None:
    """HDF5 puts its signature at byte 0 or after a user block at 512, 1024, 2048, ..."""
    if size == 0:
        raise err(f"{what} is empty (0 bytes)")
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= size:
        fobj.seek(offset)
        if fobj.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            fobj.seek(0)
            return
        offset = 512 if offset == 0 else offset * 2
    raise err(f"{what} is not an HDF5 file (no HDF5 signature)")


def open_hdf5(source: str | os.PathLike | BinaryIO, err: Callable[[str], C2SegError], what: str) -> h5py.File:
    """Open ``source`` (a path or a seekable binary file object) read-only, or raise ``err``."""
    if hasattr(source, "read"):
        fobj = source
        fobj.seek(0, os.SEEK_END)
        size = fobj.tell()
        _check_signature(fobj, size, err, what)
        target: Any = fobj
    else:
        path = os.fspath(source)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise err(f"{what} not found: {path}") from None
        if os.path.isdir(path):
            raise err(f"{what} is a directory, not a file: {path}")
        with open(path, "rb") as fh:
            _check_signature(fh, size, err, what)
        target = path
    try:
        return h5py.File(target, "r", locking=False)
    except MemoryError:
        raise err(f"{what} is not a readable HDF5 file (its header declares absurd sizes)") from None
    except OSError as e:
        text = str(e).lower()
        if "truncated" in text or "eof" in text:
            raise err(f"{what} is truncated (the HDF5 header declares more bytes than the file has)") from None
        raise err(f"{what} is not a readable HDF5 file (corrupt or unsupported header)") from None


# ---------------------------------------------------------------------------------------------
# Structure checks (no raster data read)
# ---------------------------------------------------------------------------------------------


def _link_kind(link: Any) -> str | None:
    """None for a hard link, else a word for the link type that is refused."""
    if isinstance(link, h5py.HardLink):
        return None
    if isinstance(link, h5py.SoftLink):
        return "a soft link"
    if isinstance(link, h5py.ExternalLink):
        return "an external link (to another file)"
    return "a user-defined link"


def check_links(f: h5py.File, path: str, err: Callable[[str], C2SegError]) -> None:
    """Check every component of ``path`` from the root is a hard link, without following any other.

    ``get(name, getlink=True)`` only describes the *last* component of the name it is given, so
    the path is walked one component at a time from the root.
    """
    group: Any = f
    walked = ""
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        walked += "/" + part
        try:
            link = group.get(part, getlink=True)
        except (KeyError, RuntimeError, OSError, ValueError):
            link = None
        if link is None:
            return  # missing: the caller reports that with its own message
        kind = _link_kind(link)
        if kind is not None:
            raise err(f"'{walked}' is {kind}; links are refused, not followed")
        if i < len(parts) - 1:
            group = group[part]
            if not isinstance(group, h5py.Group):
                return


def check_storage(dset: h5py.Dataset, name: str, err: Callable[[str], C2SegError]) -> None:
    """Refuse storage that reaches outside the file or needs code HDF5 does not carry."""
    dcpl = dset.id.get_create_plist()
    if dcpl.get_layout() == h5d.VIRTUAL:
        raise err(f"'{name}' is a virtual dataset (it maps data from other files); store the data itself")
    if dcpl.get_external_count() > 0:
        raise err(f"'{name}' uses external raw storage (data kept in another file); store the data itself")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in ALLOWED_FILTERS:
            raise err(
                f"'{name}' uses compression filter id {code}, which is not built in; "
                f"use one of {', '.join(sorted(set(ALLOWED_FILTERS.values())))}"
            )


def check_tree(f: h5py.File, err: Callable[[str], C2SegError], limits: Limits = DEFAULT_LIMITS) -> None:
    """Walk the whole file one hard link at a time, refusing any other link and bounding its size.

    Unlike ``visititems`` (which silently skips soft and external links), every link is looked at
    itself. Every dataset's storage is checked, even ones the kit never reads, because whoever
    opens the file next might read them.
    """
    objects = 0
    _check_attr_count(f, "/", err, limits)
    stack: list[tuple[h5py.Group, str, int]] = [(f, "", 0)]
    while stack:
        group, prefix, depth = stack.pop()
        n = len(group)  # H5Gget_info: a count, no iteration over a hostile number of links
        if objects + n > limits.max_objects:
            raise err(f"file holds too many objects (more than {limits.max_objects}); a submission needs one dataset")
        for name in group:
            path = f"{prefix}/{name}"
            kind = _link_kind(group.get(name, getlink=True))
            if kind is not None:
                raise err(f"'{path}' is {kind}; links are refused, not followed")
            objects += 1
            cls = group.get(name, getclass=True)
            if cls is h5py.Group:
                if depth + 1 > limits.max_depth:
                    raise err(f"groups are nested too deeply (more than {limits.max_depth} levels)")
                sub = group[name]
                _check_attr_count(sub, path, err, limits)
                stack.append((sub, path, depth + 1))
            elif cls is h5py.Dataset:
                dset = group[name]
                _check_attr_count(dset, path, err, limits)
                check_storage(dset, path, err)


def _check_attr_count(obj: Any, path: str, err: Callable[[str], C2SegError], limits: Limits) -> None:
    if len(obj.attrs) > limits.max_attrs:
        raise err(f"'{path}' has too many attributes ({len(obj.attrs)} > {limits.max_attrs})")


def read_str_attr(obj: Any, key: str, err: Callable[[str], C2SegError], limits: Limits = DEFAULT_LIMITS) -> str | None:
    """A short text attribute, or None when absent; refuses anything that is not a small string."""
    if key not in obj.attrs:
        return None
    aid = obj.attrs.get_id(key)
    tclass = aid.get_type().get_class()
    if tclass != h5t.STRING or aid.shape not in ((), (1,)):
        raise err(f"attribute '{key}' must be a text string")
    if not aid.get_type().is_variable_str() and aid.get_type().get_size() > limits.max_attr_bytes:
        raise err(f"attribute '{key}' is too long")
    value = obj.attrs[key]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = str(value)
    if len(value) > limits.max_attr_bytes:
        raise err(f"attribute '{key}' is too long")
    return value


# ---------------------------------------------------------------------------------------------
# The raster
# ---------------------------------------------------------------------------------------------


@dataclass
class RasterLayout:
    """What a checked raster declares; decides how it is read."""

    shape: tuple[int, int]
    dtype: np.dtype
    chunks: tuple[int, int] | None
    filters: list[tuple[int, int]] = field(default_factory=list)  # (filter id, position)

    @property
    def chunk_nbytes(self) -> int:
        return math.prod(self.chunks) * self.dtype.itemsize if self.chunks else 0


def check_raster(
    dset: h5py.Dataset,
    name: str,
    err: Callable[[str], C2SegError],
    *,
    expected_shape: tuple[int, int] | None = None,
    max_pixels: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> RasterLayout:
    """Check type, space and storage of a 2-D integer raster before any of its data is read."""
    dsid = dset.id
    tid = dsid.get_type()
    tclass = tid.get_class()
    if tclass != h5t.INTEGER:
        kind = _TYPE_CLASS_NAMES.get(tclass, f"type class {tclass}")
        raise err(f"'{name}' must hold integers (uint8 class ids), got {kind} data")
    size = tid.get_size()
    if size not in (1, 2, 4, 8) or tid.get_precision() != 8 * size or tid.get_offset() != 0:
        raise err(f"'{name}' has an unusual integer type ({size} bytes, {tid.get_precision()} bits); use uint8")
    dtype = dset.dtype

    space = dsid.get_space()
    stype = space.get_simple_extent_type()
    if stype == h5s.NULL:
        raise err(f"'{name}' is empty (no dataspace)")
    if stype == h5s.SCALAR:
        raise err(f"'{name}' must be 2-D (H x W), got a scalar")
    dims = tuple(int(d) for d in space.get_simple_extent_dims())
    maxdims = tuple(int(d) for d in space.get_simple_extent_dims(maxdims=True))
    if len(dims) != 2:
        raise err(f"'{name}' must be 2-D (H x W), got {len(dims)}-D shape {_fmt_shape(dims)}")
    if any(m == h5s.UNLIMITED for m in maxdims):
        raise err(f"'{name}' has an unlimited maxshape; write it with a fixed shape")
    if 0 in dims:
        raise err(f"'{name}' is empty (shape {_fmt_shape(dims)})")
    if expected_shape is not None and dims != tuple(expected_shape):
        raise err(f"'{name}' has shape {_fmt_shape(dims)}, expected {_fmt_shape(tuple(expected_shape))}")
    if max_pixels is not None and dims[0] * dims[1] > max_pixels:
        raise err(f"'{name}' declares {_fmt_shape(dims)} pixels, far more than the target city has")

    check_storage(dset, name, err)
    dcpl = dsid.get_create_plist()
    chunks = None
    filters: list[tuple[int, int]] = []
    if dcpl.get_layout() == h5d.CHUNKED:
        chunks = tuple(int(c) for c in dcpl.get_chunk())
        if len(chunks) != 2 or any(c > d for c, d in zip(chunks, dims, strict=True)):
            raise err(f"'{name}' has chunks {_fmt_shape(chunks)} larger than the dataset {_fmt_shape(dims)}")
        nbytes = math.prod(chunks) * dtype.itemsize
        if nbytes > limits.max_chunk_bytes:
            raise err(
                f"'{name}' has chunks of {nbytes / 2**20:.0f} MiB (limit {limits.max_chunk_bytes >> 20} MiB); "
                "use smaller chunks, e.g. chunks=True"
            )
        n_chunks = math.ceil(dims[0] / chunks[0]) * math.ceil(dims[1] / chunks[1])
        if n_chunks > limits.max_chunks:
            raise err(
                f"'{name}' is split into {n_chunks} chunks of {_fmt_shape(chunks)} (limit {limits.max_chunks}); "
                "use larger chunks, e.g. chunks=True"
            )
        filters = [(dcpl.get_filter(i)[0], i) for i in range(dcpl.get_nfilters())]
        codes = [c for c, _ in filters]
        if len(set(codes)) != len(codes):
            raise err(f"'{name}' applies the same filter twice; write it with one gzip (or lzf) pass")
        if FILTER_LZF in codes and h5z.FILTER_DEFLATE in codes:
            # HDF5 would inflate that gzip itself, without our bound; no honest writer stacks them.
            raise err(f"'{name}' stacks lzf and gzip compression; use one of them")
        for i in range(dcpl.get_nfilters()):
            code, _, values, _ = dcpl.get_filter(i)
            if code != FILTER_LZF:
                continue
            if nbytes > limits.max_lzf_chunk_bytes:
                raise err(
                    f"'{name}' has lzf chunks of {nbytes / 2**20:.1f} MiB (limit {limits.max_lzf_chunk_bytes >> 20} MiB "
                    "for lzf); use gzip or smaller chunks"
                )
            # h5py's LZF filter allocates cd_values[2] bytes per chunk: a value from the file.
            if len(values) >= 3 and values[2] not in (0, nbytes):
                raise err(f"'{name}' has an lzf filter whose declared chunk size does not match its chunks")
    return RasterLayout(shape=dims, dtype=dtype, chunks=chunks, filters=filters)  # type: ignore[arg-type]


class RawFile:
    """Plain byte reads from the file HDF5 has open (a path or a seekable file object)."""

    def __init__(self, source: Any) -> None:
        self._lock = threading.Lock()
        if hasattr(source, "read"):
            self._fobj, self._fd = source, None
            source.seek(0, os.SEEK_END)
            self.size = source.tell()
        else:
            self._fobj, self._fd = None, os.open(os.fspath(source), os.O_RDONLY)
            self.size = os.fstat(self._fd).st_size

    def read_at(self, offset: int, size: int, err: Callable[[str], C2SegError], name: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise err(f"'{name}' has a chunk beyond the end of the file; the file is truncated or corrupt")
        if self._fd is not None:
            data = os.pread(self._fd, size, offset)
        else:
            with self._lock:
                self._fobj.seek(offset)
                data = self._fobj.read(size)
        if len(data) != size:
            raise err(f"'{name}' has a chunk beyond the end of the file; the file is truncated or corrupt")
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


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _sizeof_lengths(raw: RawFile, err: Callable[[str], C2SegError], what: str) -> int:
    """The superblock's "size of lengths" (8 for files h5py writes)."""
    base = 0
    while base + 16 <= raw.size:
        head = raw.read_at(base, 16, err, what)
        if head[:8] == HDF5_SIGNATURE:
            version = head[8]
            size = head[14] if version in (0, 1) else head[10]
            if size not in (2, 4, 8, 16, 32):
                raise err(f"{what} is not a readable HDF5 file (corrupt superblock)")
            return size
        base = 512 if base == 0 else base * 2
    raise err(f"{what} is not an HDF5 file (no HDF5 signature)")


def check_global_heaps(raw: RawFile, err: Callable[[str], C2SegError], what: str) -> None:
    """Walk every global heap collection (where variable-length strings live) the way HDF5 will,
    refusing one whose object sizes would not lead to its end.

    HDF5 parses a collection the first time a string in it is read; a damaged object size there
    (a free-space object of size 0, say) sends it into an endless loop, in C, that no timeout in
    this process can stop. Each step of this walk advances at least one object header, so it ends.
    """
    length = _sizeof_lengths(raw, err, what)
    header = _align8(8 + length)  # "GCOL", version, 3 reserved, collection size
    obj_header = _align8(8 + length)  # index, reference count, 4 reserved, object size
    for at in raw.find_all(b"GCOL"):
        if at + header > raw.size:
            continue
        head = raw.read_at(at, header, err, what)
        if head[4] != 1:
            continue  # not a collection HDF5 would accept; it refuses other versions itself
        size = int.from_bytes(head[8 : 8 + length], "little")
        if size < header or at + size > raw.size:
            raise err(f"{what} is corrupt: a global heap collection runs past the end of the file")
        data = raw.read_at(at, size, err, what)
        p = header
        while p + obj_header <= size:
            index = int.from_bytes(data[p : p + 2], "little")
            obj_size = int.from_bytes(data[p + 8 : p + 8 + length], "little")
            need = obj_header + _align8(obj_size) if index else obj_size
            if need < obj_header or (index == 0 and obj_size % 8) or p + need > size:
                raise err(f"{what} is corrupt: damaged global heap (variable-length strings)")
            p += need


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """One small thread pool for inflating chunks, created on first use."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="c2seg-inflate")
    return _POOL


class RasterReader:
    """Reads a checked raster in row bands with memory bounded by one band of chunks."""

    def __init__(self, dset: h5py.Dataset, layout: RasterLayout, name: str, err: Callable[[str], C2SegError],
                 limits: Limits = DEFAULT_LIMITS, raw: RawFile | None = None) -> None:
        self.dset = dset
        self.layout = layout
        self.name = name
        self.err = err
        self.limits = limits
        self.raw = raw  # stored chunks are read from here (plain file reads) rather than through HDF5

    # Deflate and shuffle only (the usual case, and what the kit writes): chunks are decoded here
    # with a bounded inflate and HDF5 never decodes them. With fletcher32 the bounded inflate runs
    # as a check on every chunk of a band, then HDF5 decodes it (and verifies the checksum). LZF
    # (never stacked with gzip) is bounded by its format: at most ~88x a stored chunk, which is at
    # most its own size, which is at most max_lzf_chunk_bytes.
    def _decodes_itself(self) -> bool:
        codes = {c for c, _ in self.layout.filters}
        return self.layout.chunks is not None and codes <= {h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE}

    def iter_bands(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, block) covering the raster top to bottom, in the file's dtype."""
        h, w = self.layout.shape
        try:
            if self._decodes_itself():
                yield from self._iter_chunk_bands(decode=True)
                return
            if self.layout.chunks is not None:
                precheck = any(c == h5z.FILTER_DEFLATE for c, _ in self.layout.filters) and not any(
                    c == FILTER_LZF for c, _ in self.layout.filters
                )
                if precheck:
                    for r0, _ in self._iter_chunk_bands(decode=False):
                        with memory_guard(self.limits.memory_guard_bytes):
                            band = self.dset[r0 : min(h, r0 + self.layout.chunks[0])]
                        yield r0, band
                    return
                self._check_chunk_sizes()
                per_band = self.layout.chunk_nbytes * math.ceil(w / self.layout.chunks[1])
                rows = self.layout.chunks[0] * max(1, self.limits.band_bytes // max(1, per_band))
            else:
                rows = max(1, self.limits.band_bytes // max(1, w * self.layout.dtype.itemsize))
            for r0 in range(0, h, rows):
                with memory_guard(self.limits.memory_guard_bytes):
                    band = self.dset[r0 : min(h, r0 + rows)]
                yield r0, band
        except (OSError, RuntimeError, *_INFLATE_ERRORS, KeyError, ValueError, TypeError, IndexError, MemoryError) as e:
            if isinstance(e, C2SegError):
                raise
            raise self.err(f"'{self.name}' could not be read: the file is truncated or corrupt") from None

    def _chunk_index(self) -> dict[tuple[int, int], tuple[int, int, int]]:
        """chunk offset -> (filter mask, stored size, file address), from the chunk index."""
        index: dict[tuple[int, int], tuple[int, int, int]] = {}
        gh = math.ceil(self.layout.shape[0] / self.layout.chunks[0])  # type: ignore[index]
        gw = math.ceil(self.layout.shape[1] / self.layout.chunks[1])  # type: ignore[index]

        def visit(info: Any) -> None:
            index[tuple(int(o) for o in info.chunk_offset)] = (  # type: ignore[index]
                int(info.filter_mask), int(info.size), int(info.byte_offset))

        dsid = self.dset.id
        if dsid.get_num_chunks() > gh * gw:
            raise self.err(f"'{self.name}' has more chunks than its shape allows; the file is corrupt")
        if hasattr(dsid, "chunk_iter"):
            dsid.chunk_iter(visit)
        else:  # pragma: no cover - HDF5 < 1.14
            for i in range(dsid.get_num_chunks()):
                visit(dsid.get_chunk_info(i))
        return index

    def _stored_limit(self) -> int:
        # A compressed chunk is at most slightly larger than its raw bytes (HDF5 skips an optional
        # filter that does not help); the checksum adds 4 bytes.
        return self.layout.chunk_nbytes + self.layout.chunk_nbytes // 64 + 1024

    def _check_chunk_sizes(self) -> None:
        limit = self._stored_limit()
        for _, stored, _ in self._chunk_index().values():
            if stored > limit:
                raise self.err(f"'{self.name}' has a chunk stored larger than its own size; the file is corrupt")

    def _iter_chunk_bands(self, decode: bool) -> Iterator[tuple[int, np.ndarray | None]]:
        """Walk the chunk grid band by band, inflating each stored chunk with a hard limit.

        With ``decode`` the band is assembled from the decoded chunks; without, chunks are only
        checked (the caller then lets HDF5 read the band) and None is yielded.
        """
        h, w = self.layout.shape
        ch, cw = self.layout.chunks  # type: ignore[misc]
        dtype = self.layout.dtype
        nbytes = self.layout.chunk_nbytes
        limit = self._stored_limit()
        index = self._chunk_index()
        fill: list = []  # read only if a chunk is missing: HDF5 has crashed decoding a damaged fill value
        dsid = self.dset.id

        def place(band: np.ndarray | None, rows: int, c0: int, cols: int, mask: int, raw: Any) -> None:
            data = self._decode(bytes(raw), mask, nbytes)
            if band is not None:
                band[:, c0 : c0 + cols] = np.frombuffer(data, dtype=dtype).reshape(ch, cw)[:rows, :cols]

        def start(r0: int) -> tuple[np.ndarray | None, list]:
            """Read the band's stored chunks (HDF5, this thread) and hand their inflating and
            placing to the pool, where zlib runs without the GIL."""
            rows = min(ch, h - r0)
            band = np.empty((rows, w), dtype=dtype) if decode else None
            jobs = []
            for c0 in range(0, w, cw):
                cols = min(cw, w - c0)
                entry = index.get((r0, c0))
                if entry is None:  # never written: HDF5 would return the fill value
                    if band is not None:
                        if not fill:
                            fill.append(self.dset.fillvalue)
                        band[:, c0 : c0 + cols] = fill[0]
                    continue
                if entry[1] > limit:
                    raise self.err(f"'{self.name}' has a chunk stored larger than its own size; the file is corrupt")
                if self.raw is not None:
                    # Plain reads at the address the index gives: h5py's read_direct_chunk looks the
                    # chunk up twice (size, then data) and a damaged index can make those disagree.
                    mask, raw = entry[0], self.raw.read_at(entry[2], entry[1], self.err, self.name)
                else:
                    mask, raw = dsid.read_direct_chunk((r0, c0))
                jobs.append(_pool().submit(place, band, rows, c0, cols, mask, raw))
            return band, jobs

        # One band of look-ahead: the next band inflates while the caller works on this one.
        pending = start(0)
        for r0 in range(0, h, ch):
            band, jobs = pending
            try:
                pending = start(r0 + ch) if r0 + ch < h else (None, [])
            finally:
                for job in jobs:
                    job.result()  # re-raises a refusal from the worker
            yield r0, band

    def _decode(self, data: bytes, mask: int, nbytes: int) -> bytes:
        """Undo deflate/shuffle in reverse pipeline order; inflate never exceeds ``nbytes``."""
        for code, pos in reversed(self.layout.filters):
            if mask & (1 << pos):
                continue  # HDF5 skipped this (optional) filter for this chunk
            if code == h5z.FILTER_FLETCHER32:
                data = data[:-4]  # the checksum; HDF5 verifies it when it decodes the chunk
            elif code == h5z.FILTER_DEFLATE:
                inflater = _inflate.decompressobj()
                out = inflater.decompress(data, nbytes)
                if inflater.unconsumed_tail or (not inflater.eof and inflater.decompress(b"", 1)):
                    raise self.err(
                        f"'{self.name}' has a chunk that inflates beyond its declared {nbytes} bytes "
                        "(a compression bomb)"
                    )
                if not inflater.eof:
                    raise self.err(f"'{self.name}' has a truncated compressed chunk; the file is corrupt")
                data = out
            elif code == h5z.FILTER_SHUFFLE:
                size = self.layout.dtype.itemsize
                if size > 1 and len(data) == nbytes:
                    data = np.frombuffer(data, np.uint8).reshape(size, -1).T.tobytes()
        if len(data) != nbytes:
            raise self.err(f"'{self.name}' has a chunk of {len(data)} bytes instead of {nbytes}; the file is corrupt")
        return data
