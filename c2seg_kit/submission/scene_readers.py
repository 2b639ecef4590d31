"""The scene layout's readers: one class-id raster of the whole target city (``prediction`` in a
submission, ``label`` in a labels file), checked (type, shape, chunks) before any data is read,
then read in row bands whose values are checked band by band (docs/formats.md).

>>> with open_submission("predictions.h5", track="AB", expected_shape=(2465, 811)) as sub:
...     for r0, block in sub.iter_rows(256):
...         ...
"""

from __future__ import annotations

from collections.abc import Iterator

import h5py
import numpy as np

from c2seg_kit import h5safe
from c2seg_kit.errors import InvalidDataError, InvalidSubmissionError
from c2seg_kit.submission.formats import (
    LABELS_FORMAT,
    LAYOUT_ATTR,
    LAYOUT_TILES,
    MAX_SIZE_FACTOR,
    SUBMISSION_FORMAT,
    ClassFile,
    checked_bands,
    nominal_pixels,
)

__all__ = ["ClassRaster", "Labels", "Submission"]


class ClassRaster(ClassFile):
    """A checked class-id raster of the scene layout; subclasses fix names and error class."""

    def __init__(self, checked: h5safe.CheckedFile, track: str | None, *,
                 expected_shape: tuple[int, int] | None = None) -> None:
        super().__init__(checked, track)
        err, f, name = self.error, checked.file, self.dataset_name
        if name not in f:
            raise err(f"missing dataset '{name}' at the root of the file")
        dset = f.get(name)
        if not isinstance(dset, h5py.Dataset):
            raise err(f"'{name}' must be a dataset, got a group (a file of tiles says so: root attribute "
                      f"{LAYOUT_ATTR} = '{LAYOUT_TILES}')")
        self._reader = checked.raster(dset, name, expected_shape=expected_shape,
                                      max_pixels=MAX_SIZE_FACTOR * nominal_pixels(self.track))
        self.shape: tuple[int, int] = self._reader.layout.shape
        self.dtype = self._reader.layout.dtype

    # -- data -------------------------------------------------------------------------------

    def _checked_bands(self) -> Iterator[tuple[int, np.ndarray]]:
        """Native row bands as uint8, after checking values."""
        return checked_bands(self._reader.iter_bands(), self.dataset_name, self.error)

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

    iter_blocks = iter_rows

    def read(self) -> np.ndarray:
        """The whole raster as uint8 (checked band by band while it is filled)."""
        out = np.empty(self.shape, dtype=np.uint8)
        for r0, band in self._checked_bands():
            out[r0 : r0 + band.shape[0]] = band
        return out

    def expectation(self) -> dict:
        """What a submission scored against this raster must match (keywords of open_submission)."""
        return {"expected_shape": self.shape}

    def describe(self) -> str:
        h, w = self.shape
        return f"{h} x {w}, {self.dtype}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(track={getattr(self, 'track', None)!r}, shape={getattr(self, 'shape', None)})"


class Submission(ClassRaster):
    """An opened, structurally checked submission (``prediction``, ``submission/1``), scene layout."""

    dataset_name = "prediction"
    file_format = SUBMISSION_FORMAT
    what = "submission"
    error = InvalidSubmissionError


class Labels(ClassRaster):
    """An opened, structurally checked hidden-labels file (``label``, ``labels/1``), scene layout."""

    dataset_name = "label"
    file_format = LABELS_FORMAT
    what = "labels file"
    error = InvalidDataError
