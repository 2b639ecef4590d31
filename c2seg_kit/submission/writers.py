"""Writers of the two class-raster files (docs/formats.md): submissions and hidden labels.

>>> write_submission("predictions.h5", pred, "AB", team="us")
>>> with submission_writer("predictions.h5", (2465, 811), "AB") as w:
...     w.write_rows(0, first_rows)
...     ...
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from c2seg_kit.classes import as_class_map
from c2seg_kit.outputs import PendingFile
from c2seg_kit.submission.formats import (
    DEFAULT_CHUNK_ROWS,
    LABELS_FORMAT,
    SUBMISSION_FORMAT,
    root_attrs,
)
from c2seg_kit.submission.readers import open_submission

__all__ = ["AtomicH5Writer", "RasterWriter", "submission_writer", "write_labels", "write_submission"]


class AtomicH5Writer:
    """An HDF5 file written under a temporary name beside ``path`` and given its name only when
    complete (and, with ``verify``, only after that check passed), so a crash never leaves a half
    file. Subclasses write into :attr:`file` and put their last writes and completeness checks in
    :meth:`_finish`; ``overwrite=False`` never replaces a file that exists (:class:`c2seg_kit.outputs.PendingFile`)."""

    def __init__(self, path: str | os.PathLike, attrs: dict, *, verify: Callable[[Path], None] | None = None,
                 overwrite: bool = True) -> None:
        self.output = PendingFile(path, force=overwrite, need_folder=True)
        self.path, self.tmp = self.output.path, self.output.tmp
        self.verify = verify
        try:
            self.file = h5py.File(self.tmp, "w")
        except BaseException:
            self.output.discard()
            raise
        for key, value in attrs.items():
            if value is not None:
                self.file.attrs[key] = str(value)

    def _finish(self) -> None:
        """The last writes and completeness checks, on the open file, before a successful close."""

    def close(self, ok: bool = True) -> Path:
        try:
            try:
                if ok:
                    self._finish()
            finally:
                self.file.close()
            if ok:
                if self.verify is not None:
                    self.verify(self.tmp)
                self.output.commit()
        finally:
            self.output.discard()
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self.file.id.valid or self.tmp.exists():
            self.close(ok=exc_type is None)


class RasterWriter(AtomicH5Writer):
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
        self.shape = (int(shape[0]), int(shape[1]))
        if min(self.shape) <= 0:
            raise ValueError(f"{name} must be a non-empty 2-D raster, got shape {shape}")
        super().__init__(path, attrs, verify=verify)
        self.name = name
        self.chunk_rows = min(DEFAULT_CHUNK_ROWS, self.shape[0])
        self.ds = self.file.create_dataset(name, shape=self.shape, dtype=np.uint8,
                                           chunks=(self.chunk_rows, min(self.CHUNK_COLS, self.shape[1])),
                                           compression="gzip", compression_opts=4)
        self.next_row = 0  # rows before this one have been received
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0

    def write_rows(self, r0: int, rows: Any) -> None:
        """Rows r0.. of the raster (integers 0..13); rows must arrive in order."""
        rows = as_class_map(rows, self.name)
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

    def _finish(self) -> None:
        if self.next_row != self.shape[0]:
            raise RuntimeError(f"only {self.next_row} of {self.shape[0]} rows were written")
        self._flush(whole_chunks=False)


def submission_writer(path: str | os.PathLike, shape: tuple[int, int], track: str, *,
                      team: str | None = None, method: str | None = None) -> RasterWriter:
    """A streaming submission writer; the finished file is checked by the safe reader before it appears."""
    attrs = root_attrs(SUBMISSION_FORMAT, track, team=team, method=method)

    def verify(tmp: Path) -> None:
        with open_submission(tmp, track=attrs["track"], expected_shape=tuple(shape)):
            pass  # structure, attributes and shape exactly as every reader will check them

    return RasterWriter(path, "prediction", shape, attrs, verify=verify)


def _write_raster(path: str | os.PathLike, name: str, raster: Any, attrs: dict) -> Path:
    raster = as_class_map(raster, name)
    with RasterWriter(path, name, raster.shape, attrs) as writer:
        writer.write_rows(0, raster)
    return Path(path)


def write_submission(path: str | os.PathLike, prediction: Any, track: str, *,
                     team: str | None = None, method: str | None = None) -> Path:
    """Write ``prediction`` (H x W integers 0..13, the target city's shape) as a submission file."""
    return _write_raster(path, "prediction", prediction, root_attrs(SUBMISSION_FORMAT, track, team=team, method=method))


def write_labels(path: str | os.PathLike, label: Any, track: str) -> Path:
    """Write the hidden target labels (H x W integers 0..13; 0 = unlabelled) as ``labels.h5``."""
    return _write_raster(path, "label", label, root_attrs(LABELS_FORMAT, track))
