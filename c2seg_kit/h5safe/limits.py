"""What an untrusted HDF5 file may cost: declared-size limits, the address-space guard around HDF5,
the empty plugin search path, and the small context every check carries."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from c2seg_kit.errors import C2SegError


@dataclass(frozen=True)
class Limits:
    """Bounds on what an untrusted file may declare. Honest files are far inside all of them."""

    max_objects: int = 64  # groups, datasets and named types in the whole file
    # Direct members of a group the caller declares wide before the walk (the tile group of a
    # tile-layout file, one dataset per tile: the real Wuhan test has 850). They count against
    # this cap instead of max_objects, so scene files keep the tight bound.
    max_group_members: int = 100_000
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
    # Global heaps (where variable-length strings live) are found by scanning the bytes for their
    # magic, and each one found is walked object by object. A submission holds one or a few with
    # a handful of strings; these bounds keep the walk linear in the file size whatever the bytes
    # declare (collections nested in collections, a chain of a million tiny objects...).
    max_heap_collections: int = 1024  # "GCOL" magics anywhere in the file
    max_heap_objects: int = 100_000  # object headers walked, over all collections together


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Context:
    """Who is checking what: the error class a refusal raises (one line), the name the file goes by
    in messages ("submission", "labels file"), and the limits it is held to."""

    error: Callable[[str], C2SegError]
    what: str
    limits: Limits = DEFAULT_LIMITS


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
