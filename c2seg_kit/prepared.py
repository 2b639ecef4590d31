"""The prepared cache: what `c2seg prepare` writes and what training and prediction read.

Layout of PREPARED_DIR:
- ``manifest.json``: ``{"format": "c2seg-prepared/1", "track": "AB", "source": "augsburg",
  "target": "berlin", "cities": {...}, "options": {...}}``;
- ``<city>.h5``: datasets ``hsi``, ``msi``, ``sar`` (C x H x W float32, chunked by window)
  and, when the city has labels, ``label`` (H x W uint8).

The image datasets hold repaired (and, for HSI, PCA-reduced) values; the per-band
normalisation is stored beside them as the attributes ``norm_lo`` / ``norm_hi`` and applied
on read, ``clip((x - lo) / (hi - lo), 0, 1)``, so switching normalisation never rewrites
gigabytes. A dataset without those attributes is read as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from c2seg_kit.errors import DatasetNotFoundError, InvalidDataError
from c2seg_kit.registry import MODALITIES, Track, get_track

FORMAT = "c2seg-prepared/1"
MANIFEST = "manifest.json"


class PreparedCity:
    """One city of the prepared cache, read window by window.

    h5py handles do not survive fork, so the file is (re)opened lazily in whichever
    process first reads: DataLoader workers each get their own handle.
    """

    def __init__(self, path: Path, name: str):
        self.path = Path(path)
        self.name = name
        if not self.path.is_file():
            raise DatasetNotFoundError(f"prepared city file {self.path.name} not found in {self.path.parent}")
        self._file: h5py.File | None = None
        self._pid: int | None = None
        f = self._h5()
        missing = [m for m in MODALITIES if m not in f]
        if missing:
            raise InvalidDataError(f"{self.path}: prepared file lacks {', '.join(missing)}")
        shapes = {m: f[m].shape for m in MODALITIES}
        hw = {s[1:] for s in shapes.values()}
        if len(hw) != 1 or any(len(s) != 3 for s in shapes.values()):
            raise InvalidDataError(f"{self.path}: modalities disagree in shape: {shapes}")
        self.shape: tuple[int, int] = tuple(next(iter(hw)))  # type: ignore[assignment]
        self.channels = {m: shapes[m][0] for m in MODALITIES}
        self.has_label = "label" in f
        if self.has_label and f["label"].shape != self.shape:
            raise InvalidDataError(f"{self.path}: label shape {f['label'].shape} != image shape {self.shape}")
        self._norm = {m: self._norm_params(f[m]) for m in MODALITIES}

    @staticmethod
    def _norm_params(ds: h5py.Dataset) -> tuple[np.ndarray, np.ndarray] | None:
        if "norm_lo" not in ds.attrs:
            return None
        lo = np.asarray(ds.attrs["norm_lo"], dtype=np.float32).reshape(-1, 1, 1)
        hi = np.asarray(ds.attrs["norm_hi"], dtype=np.float32).reshape(-1, 1, 1)
        scale = np.where(hi > lo, 1.0 / np.maximum(hi - lo, 1e-12), 0.0).astype(np.float32)
        return lo, scale

    def _h5(self) -> h5py.File:
        import os

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def read(self, modality: str, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Normalised float32 window (C, r1-r0, c1-c0) of one modality."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        x = self._h5()[modality][:, r0:r1, c0:c1].astype(np.float32, copy=False)
        norm = self._norm[modality]
        if norm is not None:
            lo, scale = norm
            x = np.clip((x - lo) * scale, 0.0, 1.0, out=x if x.flags.writeable else None)
        return x

    def read_label(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """uint8 label window (r1-r0, c1-c0); zeros (unlabelled) where the city has no label."""
        if not self.has_label:
            return np.zeros((r1 - r0, c1 - c0), dtype=np.uint8)
        return self._h5()["label"][r0:r1, c0:c1]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict:  # pickled into DataLoader workers without the handle
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __repr__(self) -> str:
        return f"PreparedCity({self.name!r}, shape={self.shape}, channels={self.channels}, has_label={self.has_label})"


class PreparedData:
    """A prepared track: manifest plus one PreparedCity per city."""

    def __init__(self, prepared_dir: str | Path):
        self.root = Path(prepared_dir)
        manifest_path = self.root / MANIFEST
        if not manifest_path.is_file():
            raise DatasetNotFoundError(
                f"no {MANIFEST} in {self.root}: is this a folder written by `c2seg prepare`?"
            )
        try:
            self.manifest = json.loads(manifest_path.read_text())
            self.track: Track = get_track(self.manifest["track"])
            source, target = self.manifest["source"], self.manifest["target"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise InvalidDataError(f"{manifest_path} is not a valid prepared manifest ({e})") from None
        self.source = PreparedCity(self.root / f"{source}.h5", source)
        self.target = PreparedCity(self.root / f"{target}.h5", target)

    def city(self, which: str) -> PreparedCity:
        """A city by role ("source"/"target") or by name ("berlin")."""
        for role, city in (("source", self.source), ("target", self.target)):
            if which in (role, city.name):
                return city
        raise ValueError(f"no city {which!r} in {self.root}; expected source, target, {self.source.name} or {self.target.name}")

    def close(self) -> None:
        self.source.close()
        self.target.close()

    def __enter__(self) -> PreparedData:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
