"""Readers for the C2Seg scene files (the layout of the RSE repository; docs/data.md, "Scene files").

Two containers hold the same variables (``HSI``, ``MSI``, ``SAR``, ``label``):
- MATLAB v5 (AB): read with scipy.io, one whole variable at a time (v5 has no random access);
- MATLAB v7.3 (BW): HDF5, where MATLAB stores arrays with the axes reversed (h5py sees
  MSI as C x W x H) and the BW HSI lives on a 3x coarser grid. Windows are read lazily.

Both are detected from the bytes, not from the track, and both expose one interface:
:class:`CityScene` with ``read(modality, r0, r1, c0, c1) -> (h, w, C)`` on the 10 m grid.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from c2seg_kit.classes import check_class_values
from c2seg_kit.errors import DatasetNotFoundError, InvalidDataError
from c2seg_kit.registry import MODALITIES, City, Track

VARIABLES = {"hsi": "HSI", "msi": "MSI", "sar": "SAR"}
# scipy.io.whosmat's class names -> numpy dtypes
MAT_V5_DTYPES = {"single": "float32", "double": "float64", "uint8": "uint8", "uint16": "uint16",
                 "int16": "int16", "int32": "int32", "uint32": "uint32", "int8": "int8", "logical": "bool"}
LABEL_VARIABLE = "label"


def check_label_values(label: np.ndarray, where: str) -> None:
    """Labels must be class ids 0..13 (whole numbers, for float files); says how many and which."""
    check_class_values(label, where, InvalidDataError)


class CityScene:
    """One city's modalities and (optional) label on the 10 m grid."""

    name: str
    shape: tuple[int, int]
    bands: dict[str, int]
    dtypes: dict[str, np.dtype]
    has_label: bool

    #: HSI grid factor: the HSI is stored on a grid this many times coarser (BW: 3)
    factor: int = 1

    def read(self, modality: str, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def native_shape(self, modality: str) -> tuple[int, int]:
        """(rows, cols) of a modality on its own grid (the HSI of BW is 3x coarser)."""
        f = self.factor if modality == "hsi" else 1
        return -(-self.shape[0] // f), -(-self.shape[1] // f)

    def read_native(self, modality: str, r0: int, r1: int) -> np.ndarray:
        """Whole rows r0..r1 of a modality on its own grid, (h, w, C), before any upsampling."""
        if modality == "hsi" and self.factor > 1:  # pragma: no cover - overridden where it applies
            raise NotImplementedError
        return self.read(modality, r0, r1, 0, self.shape[1])

    def read_label(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """uint8 labels of a window, checked to be within 0..13."""
        raw = self._read_label(r0, r1, c0, c1)
        check_label_values(raw, f"{self.name} label")
        return raw.astype(np.uint8, copy=False)

    def _read_label(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_shapes(self, shapes: dict[str, tuple[int, int]], where: str) -> None:
        if len(set(shapes.values())) != 1:
            detail = ", ".join(f"{m.upper() if m != 'label' else m} {h}x{w}" for m, (h, w) in shapes.items())
            raise InvalidDataError(f"{where}: modalities disagree in shape ({detail})")


class MatV5Scene(CityScene):
    """A MATLAB v5 scene file, loaded one variable at a time and kept for later windows."""

    def __init__(self, city: City, track: Track, scene_path: Path, label_path: Path | None):
        import scipy.io

        self.name = city.name
        self._paths = dict.fromkeys(MODALITIES, scene_path)
        self._cache: dict[str, np.ndarray] = {}
        found: dict[str, tuple[tuple[int, ...], str]] = {}
        for path in {scene_path, label_path} - {None}:
            try:
                for var, shape, cls in scipy.io.whosmat(str(path)):
                    found[var] = (tuple(shape), cls)
                    if var == LABEL_VARIABLE:
                        self._paths["label"] = path
            except Exception as e:  # scipy raises many types for a broken file
                raise InvalidDataError(f"{path} is not a readable MATLAB v5 file ({type(e).__name__}: {e})") from None
        missing = [v for v in VARIABLES.values() if v not in found]
        if missing:
            raise InvalidDataError(
                f"{scene_path}: missing variable(s) {', '.join(missing)}; found {', '.join(sorted(found)) or 'none'}"
            )
        self.has_label = LABEL_VARIABLE in found
        self.bands = {}
        shapes = {}
        for m, var in VARIABLES.items():
            shape = found[var][0]
            if len(shape) == 2:  # a single-band modality saved as a matrix
                shape = (*shape, 1)
            if len(shape) != 3:
                raise InvalidDataError(f"{scene_path}: {var} has shape {shape}, expected H x W x bands")
            shapes[m] = shape[:2]
            self.bands[m] = min(shape[2], track.bands[m]) if m == "hsi" else shape[2]
        if found["HSI"][0][2:] and found["HSI"][0][2] < track.bands["hsi"]:
            raise InvalidDataError(
                f"{scene_path}: HSI has {found['HSI'][0][2]} bands, track {track.name} expects {track.bands['hsi']}"
            )
        if self.has_label:
            shapes["label"] = found[LABEL_VARIABLE][0][:2]
        self._check_shapes(shapes, str(scene_path))
        self.shape = shapes["msi"]
        self.dtypes = {m: np.dtype(MAT_V5_DTYPES.get(found[v][1], "float64")) for m, v in VARIABLES.items()}

    def _load(self, key: str) -> np.ndarray:
        if key not in self._cache:
            import scipy.io

            var = VARIABLES.get(key, LABEL_VARIABLE)
            path = self._paths[key]
            try:
                arr = scipy.io.loadmat(str(path), variable_names=[var])[var]
            except Exception as e:
                raise InvalidDataError(f"{path}: cannot read {var} ({type(e).__name__}: {e})") from None
            if arr.ndim == 2 and key != "label":
                arr = arr[:, :, None]
            if key == "hsi":  # the reference keeps the first 242 bands of Berlin
                arr = arr[:, :, : self.bands["hsi"]]
            self._cache[key] = arr
        return self._cache[key]

    def read(self, modality: str, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return self._load(modality)[r0:r1, c0:c1]

    def _read_label(self, r0, r1, c0, c1):
        return self._load("label")[r0:r1, c0:c1]

    def release(self, modality: str) -> None:
        """Forget a loaded variable (v5 files are read whole; this frees its memory)."""
        self._cache.pop(modality, None)

    def close(self) -> None:
        self._cache.clear()


class MatV73Scene(CityScene):
    """A MATLAB v7.3 (HDF5) scene: lazy windows, reversed axes, HSI on a coarser grid."""

    def __init__(self, city: City, track: Track, scene_path: Path, label_path: Path | None):
        self.name = city.name
        self._files: list[h5py.File] = []
        scene = self._open(scene_path)
        missing = [v for v in VARIABLES.values() if not isinstance(scene.get(v), h5py.Dataset)]
        if missing:
            found = ", ".join(sorted(scene.keys())) or "none"
            raise InvalidDataError(f"{scene_path}: missing variable(s) {', '.join(missing)}; found {found}")
        self._ds = {m: scene[v] for m, v in VARIABLES.items()}
        label_file = scene if label_path is None or label_path == scene_path else self._open(label_path)
        self.has_label = isinstance(label_file.get(LABEL_VARIABLE), h5py.Dataset)
        if self.has_label:
            self._ds["label"] = label_file[LABEL_VARIABLE]
        for key, ds in self._ds.items():
            want = 2 if key == "label" else 3
            if ds.ndim != want:
                raise InvalidDataError(f"{ds.file.filename}: {ds.name[1:]} has rank {ds.ndim}, expected {want}")
        # h5py sees MATLAB's H x W x C as C x W x H
        msi_c, w, h = self._ds["msi"].shape
        self.shape = (h, w)
        hsi_c, hsi_w, hsi_h = self._ds["hsi"].shape
        # The HSI grid is the 10 m grid or the track's coarser one, covering it with ceil(n / f)
        # cells or one more: the real Beijing HSI is 4492 x 2903 cells for 13474 x 8706 pixels
        # (8706 / 3 = 2902), and the reference crops the upsampled cube to the 10 m grid.
        def covers(cells: int, n: int, f: int) -> bool:
            return -(-n // f) <= cells <= -(-n // f) + (f > 1)

        factor = next((f for f in (track.hsi_factor, 1) if covers(hsi_h, h, f) and covers(hsi_w, w, f)), None)
        if factor is None:
            raise InvalidDataError(
                f"{scene_path}: HSI grid {hsi_h}x{hsi_w} does not match MSI {h}x{w} at 1/{track.hsi_factor} resolution"
            )
        self.factor = factor
        shapes = {"msi": (h, w), "sar": self._ds["sar"].shape[:0:-1], "hsi": (hsi_h * factor, hsi_w * factor)}
        shapes["hsi"] = (min(shapes["hsi"][0], h), min(shapes["hsi"][1], w))  # cropped to the 10 m grid
        if self.has_label:
            shapes["label"] = self._ds["label"].shape[::-1]
        self._check_shapes(shapes, str(scene_path))
        self.bands = {m: self._ds[m].shape[0] for m in MODALITIES}
        self.dtypes = {m: self._ds[m].dtype for m in self._ds}

    def _open(self, path: Path) -> h5py.File:
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise InvalidDataError(f"{path} is not a readable MATLAB v7.3/HDF5 file ({e})") from None
        self._files.append(f)
        return f

    def read(self, modality: str, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        ds = self._ds[modality]
        f = self.factor if modality == "hsi" else 1
        # window on the source grid, then nearest upsampling and a crop back to [r0, r1) x [c0, c1)
        rr0, rr1, cc0, cc1 = r0 // f, -(-r1 // f), c0 // f, -(-c1 // f)
        block = ds[:, cc0:cc1, rr0:rr1].transpose(2, 1, 0)
        if f > 1:
            block = block.repeat(f, axis=0).repeat(f, axis=1)
            block = block[r0 - rr0 * f : r1 - rr0 * f, c0 - cc0 * f : c1 - cc0 * f]
        return block

    def _read_label(self, r0, r1, c0, c1):
        return self._ds["label"][c0:c1, r0:r1].T

    def read_native(self, modality: str, r0: int, r1: int) -> np.ndarray:
        return self._ds[modality][:, :, r0:r1].transpose(2, 1, 0)

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()


def _is_v73(path: Path) -> bool:
    try:
        return h5py.is_hdf5(str(path))
    except OSError:
        return False


def open_city(data_dir: str | Path, track: Track, city: City) -> CityScene:
    """Open one city's scene file(s) in `data_dir`, whichever MATLAB version they are."""
    data_dir = Path(data_dir)
    scene_path = data_dir / city.scene_file
    if not scene_path.is_file():
        raise DatasetNotFoundError(
            f"expected {city.display} scene file {city.scene_file} in {data_dir} (track {track.name})"
        )
    if scene_path.stat().st_size == 0:
        raise InvalidDataError(f"{scene_path} is empty")
    label_path = data_dir / city.label_file
    label_path = label_path if label_path.is_file() else None
    if label_path is not None and label_path.stat().st_size == 0:
        raise InvalidDataError(f"{label_path} is empty")
    cls = MatV73Scene if _is_v73(scene_path) else MatV5Scene
    return cls(city, track, scene_path, label_path)
