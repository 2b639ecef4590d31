"""Writers for the two MATLAB scene-file containers (used by the synthetic generator).

- v5: scipy.io.savemat, whole variables (the format has no random access).
- v7.3: HDF5 behind MATLAB's 512-byte header, arrays stored with the axes reversed
  (MATLAB's H x W x C appears to HDF5 as C x W x H), written slab by slab.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import h5py
import numpy as np

from c2seg_kit.outputs import PendingFile, new_file

MATLAB_CLASS = {np.dtype("float32"): "single", np.dtype("float64"): "double", np.dtype("uint8"): "uint8",
                np.dtype("uint16"): "uint16", np.dtype("int16"): "int16"}
USERBLOCK = 512


def write_mat_v5(path: str | Path, variables: dict[str, np.ndarray]) -> None:
    import scipy.io

    with new_file(path) as tmp:
        scipy.io.savemat(str(tmp), variables, do_compression=False, oned_as="column")


class MatV73Writer:
    """An HDF5 file MATLAB reads as a v7.3 MAT-file; variables are declared, then filled by slabs.

    ``create(name, shape_hwc, dtype)`` declares a MATLAB H x W [x C] array;
    ``write_rows(name, r0, block)`` writes rows r0.. of it from an (h, W[, C]) block.
    The file is written under a temporary name and takes ``path`` when closed after a clean exit
    (:class:`c2seg_kit.outputs.PendingFile`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.pending = PendingFile(self.path)
        self.tmp = self.pending.tmp
        try:
            self.file = h5py.File(self.tmp, "w", userblock_size=USERBLOCK, libver="earliest")
        except BaseException:
            self.pending.discard()
            raise

    def create(self, name: str, shape_hwc: tuple[int, ...], dtype, rows_per_chunk: int = 64) -> None:
        dtype = np.dtype(dtype)
        shape = tuple(reversed(shape_hwc))  # (C,) W, H: HDF5's view of MATLAB's H x W (x C)
        # chunks hold whole row bands (the last axis), so slab writes never rewrite a chunk
        chunks = (*shape[:-2], min(shape[-2], 256), min(shape[-1], rows_per_chunk))
        if len(shape) == 3:
            chunks = (min(shape[0], 16), *chunks[1:])
        ds = self.file.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)
        ds.attrs["MATLAB_class"] = np.bytes_(MATLAB_CLASS.get(dtype, "double"))

    def write_rows(self, name: str, r0: int, block: np.ndarray) -> None:
        ds = self.file[name]
        reversed_block = block.transpose(tuple(reversed(range(block.ndim))))
        ds[..., r0 : r0 + block.shape[0]] = reversed_block

    def close(self, exc: BaseException | None = None) -> None:
        """Finish the file and give it its name; with ``exc`` (a failure), discard it instead."""
        try:
            if exc is not None:
                self.file.close()
                return
            self._finish()
            self.pending.commit()
        finally:
            self.pending.discard()

    def _finish(self) -> None:
        self.file.close()
        header = (
            f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: "
            f"{_dt.datetime.now(_dt.timezone.utc):%a %b %d %H:%M:%S %Y} HDF5 schema 1.00 ."
        ).encode("ascii")
        block = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
        with open(self.tmp, "r+b") as f:  # MATLAB's header, in the user block of the temporary file
            f.write(block.ljust(128, b"\x00"))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(exc)
