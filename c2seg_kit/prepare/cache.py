"""The prepared cache: what `c2seg prepare` writes and what training and prediction read.

Layout of PREPARED_DIR:
- ``manifest.json``: ``{"format": "c2seg-prepared/1", "layout": "scene"|"tiles", "track": "AB",
  "source": "augsburg", "target": "berlin", "cities": {...}, "options": {...}, "pca": {...}}``
  (a manifest without ``layout`` is a scene cache);
- ``<city>.h5``, scene layout: datasets ``hsi``, ``msi``, ``sar`` (C x H x W float32, chunked by
  window) and, when the city has labels, ``label`` (H x W uint8);
- ``<city>.h5``, tile layout: one group ``tiles/<id>`` per tile holding the same datasets at
  the tile's size, its georeferencing as an attribute, and the city's normalisation as root
  attributes (see :mod:`c2seg_kit.prepare.tile_city`).
Both keep the city's PCA (``pca_mean``, ``pca_components``) beside the data.

The image datasets hold repaired (and, for HSI, PCA-reduced) values; the per-band
normalisation is stored beside them as the attributes ``norm_lo`` / ``norm_hi`` and applied
on read, ``clip((x - lo) / (hi - lo), 0, 1)``, so switching normalisation never rewrites
gigabytes. A dataset without those attributes is read as it is.

Reading: ``PreparedData(dir)`` with ``.source`` / ``.target`` a :class:`PreparedCity` (scene)
or a :class:`PreparedTiles` (tiles, whose ``.tile(id)`` is a :class:`PreparedTile` raster
with the PreparedCity reading interface). Every city has ``.rasters()``: ``(None, city)`` for
a scene, ``(id, tile)`` per tile, so code that loops over rasters handles both layouts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np

from c2seg_kit.errors import DatasetNotFoundError, InvalidDataError
from c2seg_kit.io.geotiff import GeoRef
from c2seg_kit.prepare.pca import PCA
from c2seg_kit.prepare.repair import repaired_hwc
from c2seg_kit.registry import MODALITIES, Track, get_track

FORMAT = "c2seg-prepared/1"
MANIFEST = "manifest.json"
LAYOUTS = ("scene", "tiles")

Norm = tuple[np.ndarray, np.ndarray] | None  # (lo, 1 / (hi - lo)) per band, shaped (C, 1, 1)


def norm_params(lo, hi) -> Norm:
    """(lo, scale) for ``clip((x - lo) * scale, 0, 1)``; a band with hi <= lo reads as 0.

    The scale is computed in float64 (the span of float32 values near +-3.4e38 overflows float32,
    and its scale of 0 made NaN samples) and is never 0 for a band with hi > lo; a bound that is
    not finite is refused in one line."""
    if lo is None:
        return None
    lo = np.asarray(lo, dtype=np.float64).reshape(-1, 1, 1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1, 1, 1)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        bad = int(np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi)).ravel())[0])
        raise InvalidDataError(f"the prepared normalisation of band {bad + 1} is not finite "
                               f"([{lo.ravel()[bad]:g}, {hi.ravel()[bad]:g}]): prepare the data again")
    scale = np.where(hi > lo, 1.0 / np.maximum(hi - lo, 1e-12), 0.0).astype(np.float32)
    return lo.astype(np.float32), scale


def normalise(x: np.ndarray, norm: Norm) -> np.ndarray:
    """Apply stored normalisation to a float32 (C, h, w) block (in place when it can). Values
    beyond float32's range after the shift become 0 or 1, never NaN (the scale is never 0 where
    a band has a range)."""
    if norm is None:
        return x
    lo, scale = norm
    with np.errstate(over="ignore"):
        return np.clip((x - lo) * scale, 0.0, 1.0, out=x if x.flags.writeable else None)


class LazyH5:
    """An h5py file opened on first use in each process.

    h5py handles do not survive fork, so the file is (re)opened lazily in whichever process
    first reads: DataLoader workers each get their own handle; pickling drops the handle.
    """

    path: Path
    _file: h5py.File | None = None
    _pid: int | None = None

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict:  # pickled into DataLoader workers without the handle
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state


def georef_json(georef: GeoRef | None) -> str | None:
    """A tile's georeferencing as the JSON attribute the tile cache keeps."""
    return None if georef is None else json.dumps(asdict(georef))


def georef_from_json(text: str | None) -> GeoRef | None:
    if not text:
        return None
    d = json.loads(text)
    return GeoRef(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class RawTransform:
    """A city's preparation applied to raw arrays of that city: repair, PCA (HSI), normalisation.

    ``transform({"hsi": (C, h, w), "msi": ..., "sar": ...})`` -> normalised float32 arrays, equal
    to what the cache holds for the same pixels (NaN/inf repaired within the given arrays).
    """

    def __init__(self, pca_mean: np.ndarray, pca_components: np.ndarray, norms: dict[str, Norm]):
        self.pca = PCA(np.asarray(pca_mean, np.float64), np.asarray(pca_components, np.float64),
                       np.zeros(pca_components.shape[1]))
        self.norms = norms

    def __call__(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for m in MODALITIES:
            hwc, _ = repaired_hwc(arrays[m])
            if m == "hsi":
                if hwc.shape[-1] != len(self.pca.mean):
                    raise InvalidDataError(f"HSI has {hwc.shape[-1]} bands; the prepared PCA expects {len(self.pca.mean)}")
                chw = self.pca.transform(hwc)
            else:
                chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
            out[m] = normalise(chw, self.norms[m])
        return out


class CityFile(LazyH5):
    """What both layouts' cities share: the file (which must exist), the name, the kept PCA."""

    _norm: dict[str, Norm]

    def __init__(self, path: Path, name: str):
        self.path = Path(path)
        self.name = name
        if not self.path.is_file():
            raise DatasetNotFoundError(f"prepared city file {self.path.name} not found in {self.path.parent}")

    def transform(self) -> RawTransform:
        """This city's preparation, to apply to raw arrays of the same city (needs a cache that
        kept its PCA)."""
        f = self._h5()
        if "pca_components" not in f:
            raise InvalidDataError(f"{self.path} keeps no PCA (written by an older kit); run `c2seg prepare` again")
        return RawTransform(f["pca_mean"][()], f["pca_components"][()], self._norm)


class WindowReads:
    """The reading interface of one raster: its datasets live in ``_node()`` (the scene file, or a
    tile's group) and read through the city's normalisation ``_norm``."""

    has_label: bool
    _norm: dict[str, Norm]

    def _node(self) -> h5py.Group:
        raise NotImplementedError

    def read(self, modality: str, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Normalised float32 window (C, r1-r0, c1-c0) of one modality."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        x = self._node()[modality][:, r0:r1, c0:c1].astype(np.float32, copy=False)
        return normalise(x, self._norm[modality])

    def read_label(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """uint8 label window (r1-r0, c1-c0); zeros (unlabelled) where the city has no label."""
        if not self.has_label:
            return np.zeros((r1 - r0, c1 - c0), dtype=np.uint8)
        return self._node()["label"][r0:r1, c0:c1]


class PreparedCity(CityFile, WindowReads):
    """One city of a scene cache, read window by window."""

    layout = "scene"

    def __init__(self, path: Path, name: str):
        super().__init__(path, name)
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
        self._norm = {m: norm_params(f[m].attrs.get("norm_lo"), f[m].attrs.get("norm_hi")) for m in MODALITIES}

    def _node(self) -> h5py.Group:
        return self._h5()

    def rasters(self) -> Iterator[tuple[None, PreparedCity]]:
        """The city as one raster: ``(None, self)``."""
        yield None, self

    def __repr__(self) -> str:
        return f"PreparedCity({self.name!r}, shape={self.shape}, channels={self.channels}, has_label={self.has_label})"


class PreparedTiles(CityFile):
    """One city of a tile cache: its tiles, each a :class:`PreparedTile` raster.

    ``ids`` in natural order; ``channels`` (equal for all tiles); ``has_label``; normalisation
    fitted over all the city's tiles and applied on read as for scenes.
    """

    layout = "tiles"

    def __init__(self, path: Path, name: str):
        super().__init__(path, name)
        f = self._h5()
        if f.attrs.get("layout") != "tiles" or "tile_ids" not in f or "tiles" not in f:
            raise InvalidDataError(f"{self.path} is not a prepared tile city")
        self.ids: list[str] = [i.decode() if isinstance(i, bytes) else str(i) for i in f["tile_ids"][()]]
        shapes = f["tile_shapes"][()]
        if shapes.shape != (len(self.ids), 2):
            raise InvalidDataError(f"{self.path}: tile_shapes does not match tile_ids")
        self.shapes = {i: (int(h), int(w)) for i, (h, w) in zip(self.ids, shapes, strict=True)}
        first = f["tiles"][self.ids[0]] if self.ids else None
        self.channels = {m: int(first[m].shape[0]) if first is not None else 0 for m in MODALITIES}
        self.has_label = first is not None and "label" in first
        self._norm = {m: norm_params(f.attrs.get(f"norm_lo_{m}"), f.attrs.get(f"norm_hi_{m}")) for m in MODALITIES}
        self._tiles: dict[str, PreparedTile] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def tile(self, tile_id: str) -> PreparedTile:
        tile_id = str(tile_id)
        if tile_id not in self.shapes:
            raise KeyError(f"no tile {tile_id!r} in {self.path.name}")
        if tile_id not in self._tiles:
            self._tiles[tile_id] = PreparedTile(self, tile_id)
        return self._tiles[tile_id]

    def rasters(self) -> Iterator[tuple[str, PreparedTile]]:
        """``(id, tile)`` for every tile, in id order."""
        for tile_id in self.ids:
            yield tile_id, self.tile(tile_id)

    def georef(self, tile_id: str) -> GeoRef | None:
        """The tile's georeferencing as its GeoTIFFs had it (None when they had none)."""
        self.tile(tile_id)  # unknown ids raise KeyError
        return georef_from_json(self._h5()["tiles"][str(tile_id)].attrs.get("georef"))

    def __repr__(self) -> str:
        return (f"PreparedTiles({self.name!r}, {len(self.ids)} tiles, channels={self.channels}, "
                f"has_label={self.has_label})")


class PreparedTile(WindowReads):
    """One tile of a :class:`PreparedTiles` city, with the :class:`PreparedCity` reading interface.

    Reads through its city's (lazy, per-process) file handle, so pickling a list of tiles into
    DataLoader workers opens one handle per worker, not one per tile.
    """

    layout = "tiles"

    def __init__(self, city: PreparedTiles, tile_id: str):
        self.city = city
        self.tile_id = tile_id
        self.name = city.name
        self.shape: tuple[int, int] = city.shapes[tile_id]
        self.channels = city.channels
        self.has_label = city.has_label
        self._norm = city._norm

    def _node(self) -> h5py.Group:
        return self.city._h5()["tiles"][self.tile_id]

    def georef(self) -> GeoRef | None:
        return self.city.georef(self.tile_id)

    def close(self) -> None:
        self.city.close()

    def __repr__(self) -> str:
        return f"PreparedTile({self.name!r}, {self.tile_id!r}, shape={self.shape})"


class PreparedData:
    """A prepared track: manifest plus one city per role (PreparedCity or PreparedTiles by layout)."""

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
            self.layout: str = self.manifest.get("layout", "scene")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise InvalidDataError(f"{manifest_path} is not a valid prepared manifest ({e})") from None
        if self.layout not in LAYOUTS:
            raise InvalidDataError(f"{manifest_path}: unknown layout {self.layout!r}; expected one of {LAYOUTS}")
        city_class = PreparedCity if self.layout == "scene" else PreparedTiles
        self.source = city_class(self.root / f"{source}.h5", source)
        self.target = city_class(self.root / f"{target}.h5", target)

    def city(self, which: str) -> PreparedCity | PreparedTiles:
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
