"""Reading a checked raster in row bands, with memory bounded by one band of chunks.

Deflate chunks are inflated here with a hard output limit of the chunk's own size, so a
compression bomb is refused after costing one chunk of memory, exactly like an honest file.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5z

from c2seg_kit.errors import C2SegError
from c2seg_kit.h5safe.limits import Context, memory_guard
from c2seg_kit.h5safe.rawbytes import RawFile
from c2seg_kit.h5safe.structure import FILTER_LZF, RasterLayout

try:  # ISA-L's inflate is several times faster than zlib's and has the same streaming API
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - optional speed-up
    _inflate = zlib  # type: ignore[assignment]
_INFLATE_ERRORS = (zlib.error, _inflate.error)

_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """One small thread pool for inflating chunks, created on first use."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="c2seg-inflate")
    return _POOL


class RasterReader:
    """Reads a checked raster in row bands with memory bounded by one band of chunks."""

    def __init__(self, dset: h5py.Dataset | h5d.DatasetID, layout: RasterLayout, name: str, ctx: Context,
                 raw: RawFile | None = None) -> None:
        # The low-level id is all the chunk path needs; h5py's Dataset (slicing, fill value) is
        # made only when a band is read through HDF5 (see dset).
        self._dset = dset if isinstance(dset, h5py.Dataset) else None
        self.dsid = dset.id if self._dset is not None else dset
        self.layout = layout
        self.name = name
        self.ctx = ctx
        self.limits = ctx.limits
        self.raw = raw  # stored chunks are read from here (plain file reads) rather than through HDF5

    @property
    def dset(self) -> h5py.Dataset:
        if self._dset is None:
            self._dset = h5py.Dataset(self.dsid)
        return self._dset

    # Deflate and shuffle only (the usual case, and what the kit writes): chunks are decoded here
    # with a bounded inflate and HDF5 never decodes them. With fletcher32 the bounded inflate runs
    # as a check on every chunk of a band, then HDF5 decodes it (and verifies the checksum). LZF
    # (never stacked with gzip) is bounded by its format: at most ~88x a stored chunk, which is at
    # most its own size, which is at most max_lzf_chunk_bytes.
    def _decodes_itself(self) -> bool:
        codes = {c for c, _ in self.layout.filters}
        return self.layout.chunks is not None and codes <= {h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE}

    def iter_bands(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, block) covering the raster top to bottom, in the file's dtype.

        After each band the file's size is checked again: HDF5 reads zeros past the end of a file
        cut short while it is read, and those must not pass for class 0."""
        try:
            for r0, band in self._bands():
                if self.raw is not None:
                    self.raw.check_unchanged()
                yield r0, band
        except (OSError, RuntimeError, *_INFLATE_ERRORS, KeyError, ValueError, TypeError, IndexError, MemoryError) as e:
            if isinstance(e, C2SegError):
                raise
            if self.raw is not None:
                self.raw.check_unchanged()
            raise self.ctx.error(f"'{self.name}' could not be read: the file is truncated or corrupt") from None

    def _bands(self) -> Iterator[tuple[int, np.ndarray]]:
        h, w = self.layout.shape
        if self._decodes_itself():
            yield from self._iter_chunk_bands(decode=True)  # type: ignore[misc]
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

    def _chunk_index(self) -> dict[tuple[int, int], tuple[int, int, int]]:
        """chunk offset -> (filter mask, stored size, file address), from the chunk index."""
        index: dict[tuple[int, int], tuple[int, int, int]] = {}
        gh = math.ceil(self.layout.shape[0] / self.layout.chunks[0])  # type: ignore[index]
        gw = math.ceil(self.layout.shape[1] / self.layout.chunks[1])  # type: ignore[index]

        def visit(info: Any) -> None:
            index[tuple(int(o) for o in info.chunk_offset)] = (  # type: ignore[index]
                int(info.filter_mask), int(info.size), int(info.byte_offset))

        dsid = self.dsid
        if dsid.get_num_chunks() > gh * gw:
            raise self.ctx.error(f"'{self.name}' has more chunks than its shape allows; the file is corrupt")
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
                raise self.ctx.error(f"'{self.name}' has a chunk stored larger than its own size; the file is corrupt")

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
        dsid = self.dsid
        one_band = h <= ch  # a small raster (a tile): decoded here, in this thread

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
                    raise self.ctx.error(f"'{self.name}' has a chunk stored larger than its own size; the file is corrupt")
                if self.raw is not None:
                    # Plain reads at the address the index gives: h5py's read_direct_chunk looks the
                    # chunk up twice (size, then data) and a damaged index can make those disagree.
                    mask, raw = entry[0], self.raw.read_at(entry[2], entry[1], self.name)
                else:
                    mask, raw = dsid.read_direct_chunk((r0, c0))
                if one_band:
                    place(band, rows, c0, cols, mask, raw)  # nothing to overlap with: no thread hop
                else:
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
                    raise self.ctx.error(
                        f"'{self.name}' has a chunk that inflates beyond its declared {nbytes} bytes "
                        "(a compression bomb)"
                    )
                if not inflater.eof:
                    raise self.ctx.error(f"'{self.name}' has a truncated compressed chunk; the file is corrupt")
                data = out
            elif code == h5z.FILTER_SHUFFLE:
                size = self.layout.dtype.itemsize
                if size > 1 and len(data) == nbytes:
                    data = np.frombuffer(data, np.uint8).reshape(size, -1).T.tobytes()
        if len(data) != nbytes:
            raise self.ctx.error(f"'{self.name}' has a chunk of {len(data)} bytes instead of {nbytes}; the file is corrupt")
        return data
