"""Reader for the WHISPERS challenge GeoTIFF tiles (docs/data.md, "Challenge tiles").

``C2Seg_XX/{train,test}/{hsi,msi,sar,label}/<id>.tif[f]``: one GeoTIFF per tile and modality,
pixel-interleaved as GDAL writes them (band-first files read just as well; see
:mod:`c2seg_kit.io.geotiff`). The train split is the source city, the test split the target
city, which ships without labels. A modality's tiles may sit one folder deeper, in
``<split>/<m>/<m>/`` (BW's train HSI after unpacking its inner zip). The tiles come as a folder
or as the zip itself (:class:`c2seg_kit.io.safezip.ZipStore`, checked before anything is read).

>>> with open_tiles("C2Seg_AB.zip", get_track("AB")) as tiles:
...     train = tiles.splits["train"]
...     arrays, label = train.read_tile(train.ids[0])   # {"hsi": (C, H, W), ...}, (H, W) uint8
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np

from c2seg_kit.errors import DatasetNotFoundError, InvalidDataError
from c2seg_kit.io.geotiff import GeoRef, GeoTiffFile, TileRaster
from c2seg_kit.io.safezip import ZipLimits, ZipStore, join_rel
from c2seg_kit.io.scene import check_label_values
from c2seg_kit.io.tile_checks import (
    LABEL,
    check_id_digits,
    check_sizes,
    mask_nodata,
    natural_key,
    tile_header_check,
    tile_id_of,
)
from c2seg_kit.registry import MODALITIES, Track

SPLITS = ("train", "test")  # source city, target city
SPLIT_ROLES = {"train": "source", "test": "target"}


class TileStore(Protocol):
    """A read-only tree of files: a folder (:class:`FolderStore`) or a zip (:class:`ZipStore`)."""

    name: str

    def is_dir(self, rel: str) -> bool: ...
    def list_dir(self, rel: str) -> list[str]: ...
    def describe(self, rel: str) -> str: ...
    def open(self, rel: str): ...  # a path or a binary file object tifffile can read
    def close(self) -> None: ...


class FolderStore:
    """A folder on disk as a :class:`TileStore`. A zip in a split folder stands for the modality
    folder it is named after (``train/msi.zip`` for ``train/msi/``, as a plain ``unzip`` of the
    distributed archive leaves BW's train split) when no folder of that name exists: it is read in
    place, checked like any archive (:class:`c2seg_kit.io.safezip.ZipStore`)."""

    def __init__(self, root: str | Path, limits: ZipLimits | None = None):
        self.root = Path(root)
        self.name = str(self.root)
        self.limits = limits or ZipLimits()
        self._mounts: dict[str, ZipStore | None] = {}  # folder -> the zip standing for it (None: none)

    def _mount(self, rel: str) -> tuple[ZipStore, str] | None:
        """The zip standing for ``rel`` or a folder above it, and the path inside it; None when
        ``rel`` is on disk (or nowhere)."""
        parts = [p for p in rel.split("/") if p]
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i])
            if (self.root / folder).is_dir():
                continue
            if i < 2 or parts[i - 2] not in SPLITS:  # only <split>/<modality>.zip stands for a folder
                return None
            if folder not in self._mounts:
                archive = self.root / f"{folder}.zip"
                self._mounts[folder] = (ZipStore(archive, self.limits, strip=parts[i - 1],
                                                 depth=self.limits.max_depth) if archive.is_file() else None)
            store = self._mounts[folder]
            return None if store is None else (store, "/".join(parts[i:]))
        return None

    def is_dir(self, rel: str) -> bool:
        mounted = self._mount(rel)
        return mounted[0].is_dir(mounted[1]) if mounted else (self.root / rel).is_dir()

    def list_dir(self, rel: str) -> list[str]:
        mounted = self._mount(rel)
        if mounted:
            return mounted[0].list_dir(mounted[1])
        with os.scandir(self.root / rel) as it:
            return [e.name for e in it if e.is_file()]

    def describe(self, rel: str) -> str:
        mounted = self._mount(rel)
        return mounted[0].describe(mounted[1]) if mounted else str(self.root / rel)

    def open(self, rel: str):
        mounted = self._mount(rel)
        return mounted[0].open(mounted[1]) if mounted else self.root / rel

    def close(self) -> None:
        for store in self._mounts.values():
            if store is not None:
                store.close()
        self._mounts.clear()


def _tiles_in(store: TileStore, folder: str) -> dict[str, str]:
    """id -> file name of the tiles directly in ``folder``; two files for one id is an error."""
    found: dict[str, str] = {}
    for name in sorted(store.list_dir(folder)):
        tile_id = tile_id_of(name)
        if tile_id is None:
            continue
        try:
            check_id_digits(tile_id)
        except ValueError as e:
            raise InvalidDataError(f"{store.describe(join_rel(folder, name))}: {e}") from None
        if tile_id in found:
            raise InvalidDataError(f"{store.describe(folder)}: tile {tile_id} appears twice ({found[tile_id]}, {name})")
        found[tile_id] = name
    return found


def modality_folder(store: TileStore, base: str, modality: str) -> tuple[str, dict[str, str]] | None:
    """Where a modality's tiles are: ``base/m`` or, nested, ``base/m/m``; None when neither exists."""
    flat, nested = join_rel(base, modality), join_rel(base, modality, modality)
    if not store.is_dir(flat):
        return None
    tiles = _tiles_in(store, flat)
    if store.is_dir(nested):
        deeper = _tiles_in(store, nested)
        if tiles and deeper:
            raise InvalidDataError(f"both {store.describe(flat)} and {store.describe(nested)} hold tiles; keep one")
        if deeper:
            return nested, deeper
    return flat, tiles


class TileSplit:
    """The tiles of one split (``train`` or ``test``), read one tile at a time.

    ``ids`` lists every tile id in natural order; ``has_label`` says whether label tiles exist.
    Images come back as (C, H, W) whatever the file's interleave, labels as (H, W) uint8
    checked to be 0..13. Within one id all modalities must agree in size; across ids sizes may differ.
    """

    def __init__(self, source: str | Path | TileStore, split: str, *, prefix: str = "", track: Track | None = None):
        self.store: TileStore = FolderStore(source) if isinstance(source, (str, Path)) else source
        self.split = split
        self.track = track  # with a track, every tile's header is checked against it (tile_header_check)
        self.base = join_rel(prefix, split)
        self.folders: dict[str, str] = {}
        self.files: dict[str, dict[str, str]] = {}
        for m in (*MODALITIES, LABEL):
            found = modality_folder(self.store, self.base, m)
            if found is not None:
                self.folders[m], self.files[m] = found
        missing = [m for m in MODALITIES if not self.files.get(m)]
        if missing:
            where = ", ".join(self.store.describe(join_rel(self.base, m)) for m in missing)
            raise DatasetNotFoundError(f"expected {', '.join(missing)} tiles in {where}")
        self.has_label = bool(self.files.get(LABEL))
        self.kinds = kinds = (*MODALITIES, LABEL) if self.has_label else MODALITIES
        every = set().union(*(self.files[m] for m in kinds))
        for m in kinds:
            absent = sorted(every - set(self.files[m]), key=natural_key)
            if absent:
                others = [o for o in kinds if o != m and absent[0] in self.files[o]]
                more = f" ({len(absent)} ids lack one, e.g. {', '.join(absent[:5])})" if len(absent) > 1 else ""
                raise InvalidDataError(f"{self.store.describe(self.base)}: tile {absent[0]} has "
                                       f"{' and '.join(others)} but no {m} tile{more}")
        self.ids = sorted(every, key=natural_key)

    def path(self, modality: str, tile_id: str) -> str:
        """The tile file's path relative to the store's root."""
        try:
            return join_rel(self.folders[modality], self.files[modality][tile_id])
        except KeyError:
            raise DatasetNotFoundError(f"no {modality} tile {tile_id} in {self.store.describe(self.base)}") from None

    def describe(self, modality: str, tile_id: str) -> str:
        return self.store.describe(self.path(modality, tile_id))

    def open_raster(self, modality: str, tile_id: str) -> GeoTiffFile:
        """A tile's file, opened and its header checked (against the track when there is one:
        :func:`tile_header_check`), no pixel decoded yet."""
        rel = self.path(modality, tile_id)
        where = self.store.describe(rel)
        check = None if self.track is None else tile_header_check(self.track, modality, where)
        return GeoTiffFile(self.store.open(rel), where=where, check=check)

    def read_raster(self, modality: str, tile_id: str, *, header_only: bool = False) -> TileRaster:
        """A tile with its georeferencing; images (C, H, W) with their nodata pixels as NaN
        (:func:`mask_nodata`), labels (H, W) uint8 0..13. With a track, the header is checked
        against it first (:func:`tile_header_check`)."""
        with self.open_raster(modality, tile_id) as tiff:
            return self._decoded(modality, tiff, header_only)

    @staticmethod
    def _decoded(modality: str, tiff: GeoTiffFile, header_only: bool = False) -> TileRaster:
        raster, where = tiff.read(header_only), tiff.where
        if modality != LABEL:
            return raster if header_only else mask_nodata(raster)
        if raster.data.shape[0] != 1:
            raise InvalidDataError(f"{where}: label tile has {raster.data.shape[0]} bands, expected 1")
        label = raster.data[0]
        if label.dtype.kind not in "uif":
            raise InvalidDataError(f"{where}: label tile has dtype {label.dtype}, expected integers")
        if not header_only:
            check_label_values(label, where)
        return TileRaster(label.astype(np.uint8, copy=False), raster.georef, raster.axes)

    def read(self, modality: str, tile_id: str) -> np.ndarray:
        """A tile as (C, H, W) for images or (H, W) uint8 for labels."""
        return self.read_raster(modality, tile_id).data

    def georef(self, tile_id: str, modality: str = "msi") -> GeoRef | None:
        """A tile's georeferencing (from its header only)."""
        return self.read_raster(modality, tile_id, header_only=True).georef

    def tile_shape(self, tile_id: str, modality: str = "msi") -> tuple[int, int]:
        """(H, W) of a tile, from its header only."""
        return tuple(self.read_raster(modality, tile_id, header_only=True).data.shape[-2:])

    def header(self, tile_id: str) -> tuple[tuple[int, int], GeoRef | None]:
        """A tile's (H, W), checked to agree across its modalities, and its georeferencing (MSI's),
        from the files' headers only (no pixel is read)."""
        rasters = {m: self.read_raster(m, tile_id, header_only=True) for m in MODALITIES}
        shape = check_sizes(tile_id, self.split or "tiles", {m: r.data for m, r in rasters.items()})
        return shape, rasters["msi"].georef

    def georefs_for(self, shapes: Mapping[str, tuple[int, int]], what: str) -> dict[str, GeoRef | None]:
        """The georeferencing of the test tiles that ``what`` (a file of tiles, id -> (H, W)) holds;
        every one of its tiles must be a tile here, of the same shape (one line naming the first
        that is not)."""
        known = set(self.ids)
        georefs = {}
        for tile_id, shape in shapes.items():
            if tile_id not in known:
                raise InvalidDataError(f"tile {tile_id} of {what} is not among the tiles in {self.store.describe(self.base)}")
            here, georefs[tile_id] = self.header(tile_id)
            if here != tuple(shape):
                raise InvalidDataError(f"tile {tile_id} is {shape[0]} x {shape[1]} in {what} but {here[0]} x {here[1]} "
                                       f"in {self.store.describe(self.base)}")
        return georefs

    def read_rasters(self, tile_id: str, kinds: tuple[str, ...] | None = None) -> dict[str, TileRaster]:
        """The rasters of one tile (``kinds``: default every modality, and the label when the split
        has labels): every header is read and checked, and their sizes compared, before any of
        them is decoded."""
        kinds = self.kinds if kinds is None else kinds
        with ExitStack() as files:
            opened = {m: files.enter_context(self.open_raster(m, tile_id)) for m in kinds}
            check_sizes(tile_id, self.split or "tiles", {m: f.chw for m, f in opened.items()})
            return {m: self._decoded(m, f) for m, f in opened.items()}

    def read_tile(self, tile_id: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """All modalities of one tile (and its label when the split has labels), checked to agree in size."""
        rasters = self.read_rasters(tile_id)
        label = rasters.pop(LABEL).data if LABEL in rasters else None
        return {m: r.data for m, r in rasters.items()}, label


def _find_root(store: TileStore, track: Track) -> str | None:
    for root in (track.tile_dir, ""):
        if any(store.is_dir(join_rel(root, split, "msi")) for split in SPLITS):
            return root
    return None


def find_tile_root(data_dir: Path, track: Track) -> Path | None:
    """The C2Seg_XX folder: `data_dir` itself or its child of that name (None when neither holds tiles)."""
    store = FolderStore(data_dir)
    try:
        root = _find_root(store, track)
    finally:
        store.close()
    return None if root is None else Path(data_dir) / root


def is_zip_path(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and zipfile.is_zipfile(path)


class TileData:
    """A tile distribution (folder or zip): ``splits`` maps "train"/"test" to :class:`TileSplit`."""

    def __init__(self, store: TileStore, track: Track):
        self.store, self.track = store, track
        root = _find_root(store, track)
        if root is None:
            raise DatasetNotFoundError(
                f"no C2Seg {track.name} tiles in {store.name}: expected {track.tile_dir}/train/msi or train/msi"
            )
        self.root = root
        self.splits = {s: TileSplit(store, s, prefix=root, track=track) for s in SPLITS
                       if store.is_dir(join_rel(root, s))}

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> TileData:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def open_test_split(path: str | Path, track: Track) -> Iterator[TileSplit]:
    """The test tiles: of a distribution (``C2Seg_XX``, its parent or the zip, as :func:`open_tiles`)
    or of a split folder given directly (one holding ``msi/``, ``sar/``, ``hsi/``)."""
    path = Path(path)
    if path.is_dir():
        store = FolderStore(path)
        try:
            if all(store.is_dir(m) for m in MODALITIES):
                yield TileSplit(store, "", track=track)
                return
        finally:
            store.close()
    with open_tiles(path, track) as data:
        if "test" not in data.splits:
            raise DatasetNotFoundError(f"no test tiles in {path}: expected {track.tile_dir}/test/msi")
        yield data.splits["test"]


def open_tiles(path: str | Path, track: Track, *, limits: ZipLimits | None = None,
               workdir: str | Path | None = None) -> TileData:
    """Open a tile distribution: a folder (``C2Seg_XX`` or its parent) or the zip as distributed.

    For a zip, every member is checked first (:mod:`c2seg_kit.io.safezip`); inner zips are read in
    place when stored, else decompressed once into a temporary folder under ``workdir`` that the
    last close() removes. A folder's inner zips (``train/msi.zip``) are read in place.
    """
    path = Path(path)
    if path.is_dir():
        store: TileStore = FolderStore(path, limits)
    elif is_zip_path(path):
        store = ZipStore(path, limits, workdir)
    elif path.exists():
        raise InvalidDataError(f"{path} is neither a folder nor a zip archive")
    else:
        raise DatasetNotFoundError(f"{path} does not exist")
    try:
        return TileData(store, track)
    except BaseException:
        store.close()
        raise
