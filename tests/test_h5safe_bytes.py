"""The byte-level checks of c2seg_kit.h5safe: the global heap walk does
work linear in the file size whatever collections the bytes declare, and local files that are not
regular files, or that are cut short while read, are refused in one line, never hang or crash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostile_heaps import gcol, heap_object, interleaved, one_long_chain, other_versions, spread  # noqa: E402

from c2seg_kit import h5safe  # noqa: E402
from c2seg_kit.errors import InvalidSubmissionError  # noqa: E402
from c2seg_kit.h5safe.rawbytes import check_global_heaps  # noqa: E402
from c2seg_kit.submission.readers import open_submission  # noqa: E402
from c2seg_kit.submission.writers import write_labels, write_submission  # noqa: E402

SHAPE = (300, 200)


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> bytes:
    pred = np.random.default_rng(0).integers(0, 14, SHAPE, dtype=np.uint8)
    return write_submission(tmp_path_factory.mktemp("h") / "p.h5", pred, "AB", team="t").read_bytes()


def heap_walk(path: Path, **limits) -> tuple[int, str | None]:
    """(bytes the heap walk read, its refusal or None) for the file at ``path``."""
    ctx = h5safe.Context(InvalidSubmissionError, "submission", h5safe.Limits(**limits))
    raw = h5safe.RawFile.open(path, ctx)
    try:
        check_global_heaps(raw, ctx)
        return raw.bytes_read, None
    except InvalidSubmissionError as e:
        return raw.bytes_read, str(e)
    finally:
        raw.close()


# ---- the global heap walk is linear -------------------------------------------------------------

@pytest.mark.parametrize("tail_kb", [64, 256, 1024])
def test_nested_collections_cost_one_scan_of_the_file(tmp_path, honest, tail_kb):
    """Collections nested in collections, each valid to the end of the file (the tail that took
    the old walk 17 s at 256 KB): the walk reads the file once plus a bounded number of 16-byte
    headers, so the bytes read grow with the file, not with its square."""
    path = tmp_path / "p.h5"
    path.write_bytes(honest + interleaved(tail_kb << 10, every=64))
    size = path.stat().st_size
    limits = h5safe.Limits()
    read, refusal = heap_walk(path)
    assert read <= size + 16 * (limits.max_heap_collections + limits.max_heap_objects) + 4096
    if refusal is None:  # small enough to be walked whole: every collection is valid
        assert tail_kb == 64
    else:
        assert refusal == (f"submission declares more than {limits.max_heap_objects} objects in its global heaps "
                           "(where text attributes live); a submission needs a few")


def test_the_walk_reads_headers_not_whole_collections(tmp_path, honest):
    """900 collections, each one object covering the rest of the file: all valid and walked, and
    the walk reads about the file once (the old walk read each collection whole: 450 x the tail)."""
    path = tmp_path / "p.h5"
    path.write_bytes(honest + spread(1 << 20, count=900))
    read, refusal = heap_walk(path)
    assert refusal is None
    assert path.stat().st_size <= read < path.stat().st_size + 64 * 1024
    with open_submission(path) as sub:  # and the file is still an honest submission
        sub.check_values()


@pytest.mark.parametrize("tail, match", [
    (other_versions(64 << 10), "more than 1024 global heap collections"),
    (spread(1 << 20, count=2000), "more than 1024 global heap collections"),
    (one_long_chain(4 << 20), "more than 100000 objects in its global heaps"),
])
def test_too_many_collections_or_objects_are_refused(tmp_path, honest, tail, match):
    path = tmp_path / "p.h5"
    path.write_bytes(honest + tail)
    with pytest.raises(InvalidSubmissionError, match=match):
        open_submission(path)


def test_bounds_are_limits_and_honest_heaps_are_far_inside(tmp_path, honest):
    path = tmp_path / "p.h5"
    path.write_bytes(honest)
    # One collection holding the four attribute strings and its free space: the walk reads the
    # file once, the superblock's 16 bytes, the collection's header and five object headers.
    assert heap_walk(path, max_heap_collections=1, max_heap_objects=5) == (path.stat().st_size + 16 + 16 + 16 * 5, None)
    assert "more than 4 objects in its global heaps" in heap_walk(path, max_heap_objects=4)[1]
    path.write_bytes(honest + gcol(48) + heap_object(1, 0) + heap_object(0, 16))  # one more, valid
    assert "more than 1 global heap collections" in heap_walk(path, max_heap_collections=1)[1]


def test_a_crafted_tail_is_judged_quickly(tmp_path, honest):
    """End to end in a fresh process, with a generous bound: the old walk took minutes on this
    1 MB tail (the server's 15 s header-check limit killed it); the new one well under a second."""
    path = tmp_path / "p.h5"
    path.write_bytes(honest + interleaved(1 << 20))
    code = "import sys\nfrom c2seg_kit.cli import main\nmain(['validate', sys.argv[1]])\n"
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("error: submission declares more than") and out.stderr.count("\n") == 1


# ---- regular files only; a file cut short while read --------------------------------------------

def cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "c2seg_kit", *argv], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def pair(tmp_path):
    label = np.random.default_rng(1).integers(0, 14, SHAPE, dtype=np.uint8)
    return (write_submission(tmp_path / "pred.h5", label, "AB"), write_labels(tmp_path / "labels.h5", label, "AB"))


def test_a_fifo_is_refused_at_once_by_validate_score_and_render(tmp_path, pair):
    """Opening a FIFO for reading waits for a writer for ever; it is refused without opening it."""
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    pred, labels = pair
    for argv in (["validate", str(fifo)], ["validate", str(pred), "--labels", str(fifo)],
                 ["score", str(fifo), "--labels", str(labels)], ["score", str(pred), "--labels", str(fifo)],
                 ["render", str(fifo), "--out", str(tmp_path / "x.png")]):
        out = cli(*argv)
        assert out.returncode == 1, argv
        assert out.stderr.endswith(f"is not a regular file (a pipe, socket or device): {fifo}\n"), argv
        assert out.stderr.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_a_device_is_refused(tmp_path):
    with pytest.raises(InvalidSubmissionError, match="not a regular file"):
        open_submission("/dev/zero")


# A child that cuts the file short at a chosen moment, then runs the CLI. Old readers scanned a
# memory map of the file: a read of a page past the new end killed the process with SIGBUS.
_CUT_WHILE_SCANNING = """
import os, sys
from c2seg_kit import h5safe
from c2seg_kit.cli import main
path, marker = sys.argv[1], int(sys.argv[2])
read_at = h5safe.RawFile.read_at
def cut_after_the_marker(self, offset, *args, **kwargs):
    data = read_at(self, offset, *args, **kwargs)
    if offset == marker:
        os.truncate(path, 4096)
    return data
h5safe.RawFile.read_at = cut_after_the_marker
main(sys.argv[3:])
"""


def test_a_file_cut_short_while_scanned_is_one_line_not_a_bus_error(tmp_path, honest):
    path = tmp_path / "p.h5"
    marker = len(honest) + 1024  # a "GCOL" of another version: read, skipped, then the scan goes on
    path.write_bytes(honest + bytes(1024) + gcol(0, version=2) + bytes(8 << 20))
    out = subprocess.run([sys.executable, "-c", _CUT_WHILE_SCANNING, str(path), str(marker), "validate", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out  # SIGBUS: -7
    assert out.stderr.startswith("error: submission changed size while it was read") and out.stderr.count("\n") == 1


def test_a_file_cut_short_while_its_raster_is_read_is_refused(tmp_path):
    """HDF5 reads zeros past the end of a file: without the size check they would pass as class 0."""
    import h5py

    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update({"c2seg_format": "submission/1", "track": "AB"})
        f["prediction"] = np.full((2000, 700), 5, np.uint8)  # contiguous: HDF5 reads it itself
    with open_submission(path, limits=h5safe.Limits(band_bytes=100_000)) as sub:
        os.truncate(path, path.stat().st_size // 2)
        with pytest.raises(InvalidSubmissionError, match=r"^submission changed size while it was read \(\d+ -> \d+ bytes\)"):
            sub.check_values()
