"""The submission file (``predictions.h5``) and the hidden-labels file (``labels.h5``), C2SEG.md section 4.

This module holds the format and its rules, and the safe readers everything that opens a
prediction goes through (the CLI, the server, the demo). Readers run the whole-file checks of
:func:`c2seg_kit.h5safe.open_checked`, then this format's attributes and the raster's type, shape
and chunks, before reading any data; then they read row bands and check values band by band.
The writers live in :mod:`c2seg_kit.writers`, scoring two files in :mod:`c2seg_kit.scoring`.

>>> with open_submission("predictions.h5", track="AB", expected_shape=(2465, 811)) as sub:
...     for r0, block in sub.iter_rows(256):
...         ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, BinaryIO, TypeAlias

import h5py
import numpy as np

from c2seg_kit import h5safe
from c2seg_kit.classes import OutOfRange, holds_class_ids
from c2seg_kit.errors import C2SegError, InvalidDataError, InvalidSubmissionError
from c2seg_kit.registry import TRACKS, get_track, track_names

__all__ = [
    "LABELS_FORMAT",
    "SUBMISSION_FORMAT",
    "Labels",
    "Source",
    "Submission",
    "open_class_raster",
    "open_labels",
    "open_submission",
    "root_attrs",
]

SUBMISSION_FORMAT = "submission/1"
LABELS_FORMAT = "labels/1"
DEFAULT_CHUNK_ROWS = 256
# Without an expected shape (validate with only --track), a raster may not declare more than
# this many times the target city's nominal pixel count.
MAX_SIZE_FACTOR = 2
#: Root attributes of both formats, in the order they are read: two required, three optional.
ROOT_ATTRS = ("c2seg_format", "track", "team", "method", "created")

#: What the readers open: a path, or a seekable binary file object.
Source: TypeAlias = str | os.PathLike | BinaryIO


def root_attrs(file_format: str, track: str, *, team: str | None = None, method: str | None = None) -> dict:
    """The root attributes a writer stores: format, the registry's spelling of the track, the
    creation time (ISO 8601 UTC) and the optional team and method (None: left out)."""
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    attrs = {"c2seg_format": file_format, "track": get_track(track).name, "created": created,
             "team": team, "method": method}
    return {k: v for k, v in attrs.items() if v is not None}


# Names that moved out of this module with the writers and the scoring, still importable from
# here (PEP 562); importing them lazily keeps writers -> submission a one-way dependency.
_MOVED = {
    "RasterWriter": "c2seg_kit.writers",
    "submission_writer": "c2seg_kit.writers",
    "write_labels": "c2seg_kit.writers",
    "write_submission": "c2seg_kit.writers",
    "score_files": "c2seg_kit.scoring",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class _ClassRaster:
    """A checked class-id raster inside an opened file; subclasses fix names and error class."""

    dataset_name = ""
    file_format = ""
    what = ""
    error: type[C2SegError] = C2SegError

    def __init__(self, source: Source, *, track: str | None = None,
                 expected_shape: tuple[int, int] | None = None,
                 limits: h5safe.Limits = h5safe.DEFAULT_LIMITS) -> None:
        ctx = h5safe.Context(self.error, self.what, limits)
        self._checked = h5safe.open_checked(
            source, ctx, reads=(self.dataset_name,),
            inspect=lambda checked: self._check(checked, track, expected_shape),
        )

    def _check(self, checked: h5safe.CheckedFile, track: str | None, expected_shape: Any) -> None:
        err, f, name = self.error, checked.file, self.dataset_name
        fmt = checked.str_attr("c2seg_format")
        if fmt is None:
            raise err(f"missing root attribute 'c2seg_format' (expected '{self.file_format}')")
        if fmt != self.file_format:
            shown = fmt if fmt in (SUBMISSION_FORMAT, LABELS_FORMAT) else "something else"
            raise err(f"root attribute 'c2seg_format' is {shown}, expected '{self.file_format}'")
        file_track = checked.str_attr("track")
        if file_track is None:
            raise err(f"missing root attribute 'track' (expected one of {track_names()})")
        if file_track not in TRACKS:  # never echoed: attribute content is the uploader's
            raise err(f"unknown track in root attribute 'track'; expected one of {track_names()}")
        if track is not None and file_track != track.upper():
            raise err(f"{self.what} is for track {file_track}, expected track {track.upper()}")
        self.track = file_track
        attrs = {k: checked.str_attr(k) for k in ROOT_ATTRS}
        self.attrs = {k: v for k, v in attrs.items() if v is not None}

        if name not in f:
            raise err(f"missing dataset '{name}' at the root of the file")
        dset = f.get(name)
        if not isinstance(dset, h5py.Dataset):
            raise err(f"'{name}' must be a dataset, got a group")
        nominal = TRACKS[file_track].target.nominal_shape
        self._reader = checked.raster(dset, name, expected_shape=expected_shape,
                                      max_pixels=MAX_SIZE_FACTOR * nominal[0] * nominal[1])
        self.shape: tuple[int, int] = self._reader.layout.shape
        self.dtype = self._reader.layout.dtype

    # -- data -------------------------------------------------------------------------------

    def _checked_bands(self) -> Iterator[tuple[int, np.ndarray]]:
        """Native row bands as uint8, after checking values. Out-of-range values are counted over
        the whole raster, so the message says how many and which."""
        bands = self._reader.iter_bands()
        for r0, band in bands:
            if holds_class_ids(band):
                yield r0, band.astype(np.uint8, copy=False)
                continue
            # Bad values: finish counting over the rest of the raster, then refuse.
            tally = OutOfRange().add(band)
            for _, rest in bands:
                tally.add(rest)
            raise self.error(tally.message(f"'{self.dataset_name}'"))

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
        self._checked.close()

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
    if track is not None:
        get_track(track)  # a caller's mistake (ValueError), not the file's
    return Submission(path, track=track, expected_shape=expected_shape, limits=limits)


def open_labels(path: Source) -> Labels:
    """Open a hidden-labels file through the same checks; raises InvalidDataError."""
    return Labels(path)


def open_class_raster(path: Source) -> Submission | Labels:
    """Open a submission or a labels file, whichever ``c2seg_format`` says (for render and tools
    that accept both). Unknown files are refused as submissions."""
    found: dict[str, str | None] = {}

    def peek(checked: h5safe.CheckedFile) -> None:
        found["format"] = checked.str_attr("c2seg_format")

    h5safe.open_checked(path, h5safe.Context(InvalidSubmissionError, "file"), inspect=peek).close()
    if hasattr(path, "seek"):
        path.seek(0)  # type: ignore[union-attr]
    return open_labels(path) if found["format"] == LABELS_FORMAT else open_submission(path)
