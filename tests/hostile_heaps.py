"""Crafted global heap collections appended to an honest file, for the tests of the reader's heap
walk (tests/test_h5safe_bytes.py) and its benchmark (bench/validate_size.py).

HDF5 parses a global heap collection ("GCOL", where variable-length strings live) wherever a
string's descriptor points, so the reader walks every collection the bytes declare. These tails
declare many of them; HDF5 ignores bytes past the end of its own data, so the file stays an
honest submission. Offsets below are in 16-byte slots: one collection header or one object header
(sizes of lengths 8, as h5py writes).
"""

from __future__ import annotations

import numpy as np

SLOT = 16


def gcol(size: int, version: int = 1) -> bytes:
    """A collection header: magic, version, 3 reserved bytes, the collection's size in bytes."""
    return b"GCOL" + bytes([version, 0, 0, 0]) + size.to_bytes(8, "little")


def heap_object(index: int, size: int) -> bytes:
    """An object header: index, reference count, 4 reserved bytes, the object's size in bytes."""
    return index.to_bytes(2, "little") + bytes(6) + size.to_bytes(8, "little")


def _slots(n: int, fill: bytes | None = None) -> np.ndarray:
    """``n`` writable slots of 16 bytes: zeros, or a copy of ``fill``."""
    if fill is None:
        return np.zeros((n, SLOT), np.uint8)
    return np.frombuffer(bytearray(fill), np.uint8).reshape(n, SLOT)


def _put(out: np.ndarray, rows: np.ndarray, size: np.ndarray, head: bytes) -> None:
    """Write ``head`` (8 bytes) and a little-endian 8-byte ``size`` into slots ``rows``."""
    out[rows, :8] = np.frombuffer(head, np.uint8)
    out[rows, 8:] = size.astype("<u8").view(np.uint8).reshape(-1, 8)


def interleaved(nbytes: int, every: int = 1) -> bytes:
    """Collections inside collections: a collection starts at every ``every``-th even slot and runs
    to the end of the file; each walks a chain of 32-byte objects through the odd slots (each
    object's data is the next even slot, where the next collection starts). All are valid, and a
    walk that restarts at each one costs (slots / 2) ** 2 / 2 / every steps."""
    n = nbytes // SLOT // 2 * 2  # an even number of slots
    out = _slots(n)
    odd = np.arange(1, n, 2)
    _put(out, odd, np.full(odd.size, SLOT), heap_object(1, 0)[:8])
    out[n - 1, 8:] = 0  # the last 16 bytes: an empty object, which ends every walk exactly
    starts = np.arange(0, n - 2, 2 * every)
    _put(out, starts, (n - starts) * SLOT, gcol(0)[:8])
    return out.tobytes()


def one_long_chain(nbytes: int) -> bytes:
    """One valid collection over the whole tail, holding (tail / 32) tiny objects."""
    return interleaved(nbytes, every=nbytes)


def other_versions(nbytes: int) -> bytes:
    """A "GCOL" magic every 16 bytes, each with a version HDF5 refuses (so none is a collection)."""
    return gcol(0, version=2) * (nbytes // SLOT)


def random_bytes(nbytes: int) -> bytes:
    """No structure at all: the cost of the scan alone."""
    data = np.random.default_rng(1).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    return data.replace(b"GCOL", b"gcol")


def spread(nbytes: int, count: int = 1000) -> bytes:
    """``count`` collections spread evenly over random bytes, each one object covering the rest of
    the file (so each is valid, and every later one lies inside the earlier ones' objects)."""
    n = nbytes // SLOT
    out = _slots(n, random_bytes(n * SLOT))
    starts = np.arange(0, n - 2, max(2, -(-n // count)))
    rest = (n - starts) * SLOT
    _put(out, starts, rest, gcol(0)[:8])
    _put(out, starts + 1, rest - 2 * SLOT, heap_object(1, 0)[:8])
    return out.tobytes()


#: name -> builder(tail bytes) -> tail
TAILS = {
    "random": random_bytes,
    "interleaved": interleaved,
    "one-long-chain": one_long_chain,
    "other-versions": other_versions,
    "spread-1000": spread,
}
