"""The submission file (``predictions.h5``) and the hidden-labels file (``labels.h5``), C2SEG.md section 4.

Writers produce the canonical layout; readers are the safe path everything that opens a
prediction goes through (the CLI, the server, the demo). Readers check the whole file's
structure, links and storage and the raster's type, shape and chunks before reading any data,
then read row bands and check values band by band (see :mod:`c2seg_kit.h5safe`).

>>> write_submission("predictions.h5", pred, "AB", team="us")
>>> with open_submission("predictions.h5", track="AB", expected_shape=(2465, 811)) as sub:
...     for r0, block in sub.iter_rows(256):
...         ...
>>> score_files("predictions.h5", "labels.h5")["miou"]
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from c2seg_kit import h5safe
from c2seg_kit.classes import NUM_LABELS
from c2seg_kit.errors import C2SegError, InvalidDataError, InvalidSubmissionError
from c2seg_kit.metrics import ConfusionMatrix
from c2seg_kit.registry import TRACKS

__all__ = [
    "LABELS_FORMAT",
    "SUBMISSION_FORMAT",
    "Labels",
    "Submission",
    "open_class_raster",
    "open_labels",
    "open_submission",
    "RasterWriter",
    "score_files",
    "submission_writer",
    "write_labels",
    "write_submission",
]

SUBMISSION_FORMAT = "submission/1"
LABELS_FORMAT = "labels/1"
DEFAULT_CHUNK_ROWS = 256
# Without an expected shape (validate with only --track), a raster may not declare more than
# this many times the target city's nominal pixel count.
MAX_SIZE_FACTOR = 2

Source = "str | os.PathLike | BinaryIO"


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _check_track(track: str) -> str:
    if not isinstance(track, str) or track.upper() not in TRACKS:
        raise ValueError(f"unknown track {track!r}; expected one of {', '.join(sorted(TRACKS))}")
    return track.upper()


def _class_raster(array: Any, what: str) -> np.ndarray:
    """A 2-D uint8 copy of ``array`` after checking it holds integers 0..13 (never a silent cast)."""
    a = np.asarray(array)
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"{what} must be a non-empty 2-D (H x W) array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class ids, got dtype {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= NUM_LABELS:
        bad = int(np.count_nonzero((a < 0) | (a >= NUM_LABELS)))
        raise ValueError(f"{what} has {bad} values outside 0..{NUM_LABELS - 1} (min {lo}, max {hi})")
    return a.astype(np.uint8, copy=False)


class RasterWriter:
    """Writes a class raster file (a submission or labels) row band by row band.

    The canonical layout: the given root attributes, one 2-D uint8 dataset chunked
    256 rows x 1024 columns, gzip-compressed. Rows arrive in order and are buffered to whole
    chunk rows, so every chunk is compressed once and memory stays at one chunk row. The
    file is written under a temporary name and renamed into place only when complete (and,
    with ``verify``, only after that check passed), so a crash never leaves a half file.
    """

    CHUNK_COLS = 1024

    def __init__(self, path: str | os.PathLike, name: str, shape: tuple[int, int], attrs: dict,
                 verify: Callable[[Path], None] | None = None) -> None:
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        if min(self.shape) <= 0:
            raise ValueError(f"{name} must be a non-empty 2-D raster, got shape {shape}")
        if not self.path.parent.is_dir():
            raise C2SegError(f"output folder {self.path.parent} does not exist")
        self.name = name
        self.verify = verify
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.chunk_rows = min(DEFAULT_CHUNK_ROWS, self.shape[0])
        self.file = h5py.File(self.tmp, "w")
        for key, value in attrs.items():
            if value is not None:
                self.file.attrs[key] = str(value)
        self.ds = self.file.create_dataset(name, shape=self.shape, dtype=np.uint8,
                                           chunks=(self.chunk_rows, min(self.CHUNK_COLS, self.shape[1])),
                                           compression="gzip", compression_opts=4)
        self.next_row = 0  # rows before this one have been received
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0

    def write_rows(self, r0: int, rows: Any) -> None:
        """Rows r0.. of the raster (integers 0..13); rows must arrive in order."""
        rows = _class_raster(rows, self.name)
        if r0 != self.next_row or rows.shape[1] != self.shape[1] or r0 + rows.shape[0] > self.shape[0]:
            raise ValueError(f"rows must arrive in order and fit {self.shape}: expected row {self.next_row}, "
                             f"got rows {r0}..{r0 + rows.shape[0]} of width {rows.shape[1]}")
        self.pending.append(rows)
        self.pending_rows += rows.shape[0]
        self.next_row += rows.shape[0]
        if self.pending_rows >= self.chunk_rows:
            self._flush(whole_chunks=True)

    __call__ = write_rows

    def _flush(self, whole_chunks: bool) -> None:
        if not self.pending:
            return
        block = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        n = (block.shape[0] // self.chunk_rows) * self.chunk_rows if whole_chunks else block.shape[0]
        start = self.next_row - block.shape[0]
        self.ds[start : start + n] = block[:n]
        rest = block[n:]
        self.pending = [rest] if rest.shape[0] else []
        self.pending_rows = rest.shape[0]

    def close(self, ok: bool = True) -> Path:
        try:
            if ok:
                if self.next_row != self.shape[0]:
                    raise RuntimeError(f"only {self.next_row} of {self.shape[0]} rows were written")
                self._flush(whole_chunks=False)
            self.file.close()
            if ok:
                if self.verify is not None:
                    self.verify(self.tmp)
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
        return self.path

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self.file.id.valid or self.tmp.exists():
            self.close(ok=exc_type is None)


def submission_writer(path: str | os.PathLike, shape: tuple[int, int], track: str, *,
                      team: str | None = None, method: str | None = None) -> RasterWriter:
    """A streaming submission writer; the finished file is checked by the safe reader before it appears."""
    track = _check_track(track)

    def verify(tmp: Path) -> None:
        with open_submission(tmp, track=track, expected_shape=tuple(shape)):
            pass  # structure, attributes and shape exactly as every reader will check them

    attrs = {"c2seg_format": SUBMISSION_FORMAT, "track": track, "created": _now(), "team": team, "method": method}
    return RasterWriter(path, "prediction", shape, attrs, verify=verify)


def _write_raster(path: str | os.PathLike, name: str, raster: np.ndarray, attrs: dict) -> None:
    with RasterWriter(path, name, raster.shape, attrs) as writer:
        writer.write_rows(0, raster)


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_submission(path: str | os.PathLike, prediction: Any, track: str, *,
                     team: str | None = None, method: str | None = None) -> Path:
    """Write ``prediction`` (H x W integers 0..13, the target city's shape) as a submission file."""
    track = _check_track(track)
    raster = _class_raster(prediction, "prediction")
    attrs = {"c2seg_format": SUBMISSION_FORMAT, "track": track, "created": _now(), "team": team, "method": method}
    _write_raster(path, "prediction", raster, attrs)
    return Path(path)


def write_labels(path: str | os.PathLike, label: Any, track: str) -> Path:
    """Write the hidden target labels (H x W integers 0..13; 0 = unlabelled) as ``labels.h5``."""
    track = _check_track(track)
    raster = _class_raster(label, "label")
    _write_raster(path, "label", raster, {"c2seg_format": LABELS_FORMAT, "track": track, "created": _now()})
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class _ClassRaster:
    """A checked class-id raster inside an opened file; subclasses fix names and error class."""

    dataset_name = ""
    file_format = ""
    what = ""
    error: type[C2SegError] = C2SegError

    def __init__(self, source: Any, *, track: str | None = None,
                 expected_shape: tuple[int, int] | None = None,
                 limits: h5safe.Limits = h5safe.DEFAULT_LIMITS) -> None:
        err = self.error
        self._source = source
        with h5safe.memory_guard(limits.memory_guard_bytes):
            self._file = h5safe.open_hdf5(source, err, self.what)
        self._raw = h5safe.RawFile(source)
        try:
            h5safe.check_global_heaps(self._raw, err, self.what)
            with h5safe.memory_guard(limits.memory_guard_bytes):
                self._check(err, track, expected_shape, limits)
        except C2SegError:
            self.close()
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, OverflowError, MemoryError):
            # HDF5 choked on a damaged structure; its own text may quote the file, so it is dropped.
            self.close()
            raise err(f"{self.what} is corrupt: HDF5 could not read its structure") from None
        except BaseException:
            self.close()
            raise

    def _check(self, err: Any, track: str | None, expected_shape: Any, limits: h5safe.Limits) -> None:
        f = self._file
        name = self.dataset_name
        h5safe.check_links(f, name, err)
        h5safe.check_tree(f, err, limits)
        fmt = h5safe.read_str_attr(f, "c2seg_format", err, limits)
        if fmt is None:
            raise err(f"missing root attribute 'c2seg_format' (expected '{self.file_format}')")
        if fmt != self.file_format:
            shown = fmt if fmt in (SUBMISSION_FORMAT, LABELS_FORMAT) else "something else"
            raise err(f"root attribute 'c2seg_format' is {shown}, expected '{self.file_format}'")
        file_track = h5safe.read_str_attr(f, "track", err, limits)
        if file_track is None:
            raise err(f"missing root attribute 'track' (expected one of {', '.join(sorted(TRACKS))})")
        if file_track not in TRACKS:
            raise err(f"unknown track in root attribute 'track'; expected one of {', '.join(sorted(TRACKS))}")
        if track is not None and file_track != track.upper():
            raise err(f"{self.what} is for track {file_track}, expected track {track.upper()}")
        self.track = file_track
        self.attrs = {k: h5safe.read_str_attr(f, k, err, limits) for k in ("c2seg_format", "track", "team", "method", "created")}
        self.attrs = {k: v for k, v in self.attrs.items() if v is not None}

        if name not in f:
            raise err(f"missing dataset '{name}' at the root of the file")
        dset = f.get(name)
        if not isinstance(dset, h5py.Dataset):
            raise err(f"'{name}' must be a dataset, got a group")
        nominal = TRACKS[file_track].target.nominal_shape
        layout = h5safe.check_raster(
            dset, name, err, expected_shape=expected_shape,
            max_pixels=MAX_SIZE_FACTOR * nominal[0] * nominal[1], limits=limits,
        )
        self.shape: tuple[int, int] = layout.shape
        self.dtype = layout.dtype
        self._reader = h5safe.RasterReader(dset, layout, name, err, limits, raw=self._raw)

    # -- data -------------------------------------------------------------------------------

    def _checked_bands(self) -> Iterator[tuple[int, np.ndarray]]:
        """Native row bands as uint8, after checking values. Out-of-range values are counted over
        the whole raster, so the message says how many and which."""
        bands = self._reader.iter_bands()
        for r0, band in bands:
            if band.dtype == np.uint8:
                if int(band.max()) < NUM_LABELS:
                    yield r0, band
                    continue
            elif int(band.min()) >= 0 and int(band.max()) < NUM_LABELS:
                yield r0, band.astype(np.uint8)
                continue
            # Bad values: finish counting over the rest of the raster, then refuse.
            count, seen = 0, set()  # seen: the 9 smallest distinct bad values (8 shown, + "...")
            for _, b in itertools.chain([(r0, band)], bands):
                bad = b[(b < 0) | (b >= NUM_LABELS)]
                count += bad.size
                seen = set(sorted(seen | {int(v) for v in np.unique(bad)[:9]})[:9])
            shown = ", ".join(str(v) for v in sorted(seen)[:8]) + (", ..." if len(seen) > 8 else "")
            raise self.error(
                f"'{self.dataset_name}' has {count} values outside 0..{NUM_LABELS - 1} (seen: {shown})"
            )

    def iter_rows(self, chunk_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(r0, block)``: uint8 blocks of ``chunk_rows`` rows (the last may be shorter),
        top to bottom. Without ``chunk_rows`` the file's own row bands are yielded as they are.
        Raises the reader's error class as soon as a band holds values outside 0..13."""
        if chunk_rows is None:
            yield from self._checked_bands()
            return
        if int(chunk_rows) < 1:
            raise ValueError("chunk_rows must be >= 1")
        chunk_rows = int(chunk_rows)
        pending: list[np.ndarray] = []
        have = 0
        start = 0
        for _, band in self._checked_bands():
            pending.append(band)
            have += band.shape[0]
            while have >= chunk_rows:
                buf = pending[0] if len(pending) == 1 else np.concatenate(pending)
                yield start, buf[:chunk_rows]
                start += chunk_rows
                rest = buf[chunk_rows:]
                pending = [rest] if rest.shape[0] else []
                have = rest.shape[0]
        if have:
            yield start, pending[0] if len(pending) == 1 else np.concatenate(pending)

    def read(self) -> np.ndarray:
        """The whole raster as uint8 (checked band by band while it is filled)."""
        out = np.empty(self.shape, dtype=np.uint8)
        for r0, band in self._checked_bands():
            out[r0 : r0 + band.shape[0]] = band
        return out

    def check_values(self) -> None:
        """Read everything once, refusing values outside 0..13; keeps no data."""
        for _ in self._checked_bands():
            pass

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        self._file.close()
        raw = getattr(self, "_raw", None)
        if raw is not None:
            raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(track={getattr(self, 'track', None)!r}, shape={getattr(self, 'shape', None)})"


class Submission(_ClassRaster):
    """An opened, structurally checked submission (``prediction``, ``submission/1``)."""

    dataset_name = "prediction"
    file_format = SUBMISSION_FORMAT
    what = "submission"
    error = InvalidSubmissionError


class Labels(_ClassRaster):
    """An opened, structurally checked hidden-labels file (``label``, ``labels/1``)."""

    dataset_name = "label"
    file_format = LABELS_FORMAT
    what = "labels file"
    error = InvalidDataError


def open_submission(path: Source, *, track: str | None = None,
                    expected_shape: tuple[int, int] | None = None,
                    limits: h5safe.Limits = h5safe.DEFAULT_LIMITS) -> Submission:
    """Open a submission safely; raises InvalidSubmissionError with a one-line reason.

    ``track`` and ``expected_shape`` (the target labels' shape) are checked when given. Values
    are checked while the data is read (``iter_rows``, ``read``, ``check_values``).
    """
    if track is not None and track.upper() not in TRACKS:
        raise ValueError(f"unknown track {track!r}; expected one of {', '.join(sorted(TRACKS))}")
    return Submission(path, track=track, expected_shape=expected_shape, limits=limits)


def open_labels(path: Source) -> Labels:
    """Open a hidden-labels file through the same checks; raises InvalidDataError."""
    return Labels(path)


def open_class_raster(path: Source) -> Submission | Labels:
    """Open a submission or a labels file, whichever ``c2seg_format`` says (for render and tools
    that accept both). Unknown files are refused as submissions."""
    with h5safe.open_hdf5(path, InvalidSubmissionError, "file") as f:
        raw = h5safe.RawFile(path)
        try:
            h5safe.check_global_heaps(raw, InvalidSubmissionError, "file")
        finally:
            raw.close()
        fmt = h5safe.read_str_attr(f, "c2seg_format", InvalidSubmissionError)
    if hasattr(path, "seek"):
        path.seek(0)  # type: ignore[union-attr]
    return open_labels(path) if fmt == LABELS_FORMAT else open_submission(path)


def score_files(pred_path: Source, labels_path: Source, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict:
    """Score a submission against a labels file: ``{"track": ..., **compute_scores(...)}``.

    Both files are read in lockstep row blocks; memory stays a few blocks whatever the size.
    Errors name the submission's problem only; no message quotes label content.
    """
    with open_labels(labels_path) as labels, open_submission(
        pred_path, track=labels.track, expected_shape=labels.shape
    ) as sub:
        cm = ConfusionMatrix()
        for (_, lab), (_, pred) in zip(labels.iter_rows(chunk_rows), sub.iter_rows(chunk_rows), strict=True):
            cm.update(lab, pred)
        return {"track": labels.track, **cm.scores()}
