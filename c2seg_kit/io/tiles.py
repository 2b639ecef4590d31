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

import hashlib
import os
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np

from c2seg_kit.errors import DatasetNotFoundError, InvalidDataError
from c2seg_kit.io.geotiff import GeoRef, GeoTiffFile, HeaderCheck, TileRaster
from c2seg_kit.io.safezip import ZipLimits, ZipStore, join_rel
from c2seg_kit.io.scene import check_label_values
from c2seg_kit.registry import MODALITIES, Track

SPLITS = ("train", "test")  # source city, target city
SPLIT_ROLES = {"train": "source", "test": "target"}
LABEL = "label"
SUFFIXES = (".tiff", ".tif")  # any case
#: The archives as distributed, with the MD5 a TorchGeo dataset draft records.
DISTRIBUTED_MD5 = {"C2Seg_AB.zip": "1a7eddf6b90b875ba1ab4cc173818296",
                   "C2Seg_BW.zip": "4728fa97747fad55de8c55fcbef8be60"}
#: A tile may be up to this many times its track's tile side a side (AB 256 px, BW 512 px).
TILE_SIDE_MARGIN = 2
#: ...and hold at most the track's band count x that side squared x this many bytes per value
#: (float32; a float64 tile must be smaller): AB's HSI 63 MB, BW's 122 MB at most.
TILE_VALUE_BYTES = 4


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


def tile_id_of(name: str) -> str | None:
    """The tile id (stem) of a tile file name, or None for anything else (hidden files included)."""
    if name.startswith("."):
        return None
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def is_ascii_number(text: str) -> bool:
    """True for ASCII digits only ("17"): ``str.isdigit`` also accepts "³", "①" or "٣", which
    ``int`` refuses or reads as another number's digits."""
    return text.isascii() and text.isdigit()


def tile_header_check(track: Track, modality: str, where: str) -> HeaderCheck:
    """What a tile of ``modality`` may declare on ``track``, checked on its header before any
    pixel is decoded: at most :data:`TILE_SIDE_MARGIN` times the track's tile side a side; the
    track's band count (HSI: at most that many, a subset of the bands is accepted; labels: one
    band); integer or float values of at most 8 bytes; at most the track's bands x that side
    squared x :data:`TILE_VALUE_BYTES` bytes in all."""
    side = TILE_SIDE_MARGIN * track.tile_side
    want = 1 if modality == LABEL else track.bands[modality]
    name = modality if modality == LABEL else modality.upper()

    def check(chw: tuple[int, int, int], dtype: np.dtype) -> None:
        bands, h, w = chw
        if not (1 <= h <= side and 1 <= w <= side):
            raise InvalidDataError(f"{where}: tile of {h} x {w} pixels; track {track.name}'s tiles are at most "
                                   f"{track.tile_side} px a side (accepted up to {side})")
        if modality == LABEL and bands != 1:
            raise InvalidDataError(f"{where}: label tile has {bands} bands, expected 1")
        if bands > want or (bands != want and modality != "hsi") or bands < 1:
            subset = " (or a subset of them)" if modality == "hsi" else ""
            raise InvalidDataError(f"{where}: {name} tile of {bands} bands; track {track.name}'s {name} tiles have "
                                   f"{want}{subset}")
        if dtype.kind not in "uif" or dtype.itemsize > 8:
            raise InvalidDataError(f"{where}: {name} tile of {dtype} values; expected integers or floats")
        limit = want * side * side * TILE_VALUE_BYTES
        if bands * h * w * dtype.itemsize > limit:
            raise InvalidDataError(f"{where}: {name} tile of {bands} x {h} x {w} {dtype} values, over the "
                                   f"{limit} bytes a tile of track {track.name} may hold")

    return check


def mask_nodata(raster: TileRaster) -> TileRaster:
    """The pixels a GeoTIFF declares nodata (GDAL_NODATA) as NaN, so that they are repaired and
    counted as missing like NaN; integer tiles holding any become float (float32 for values of
    up to 2 bytes and float32 tiles, float64 otherwise). ``nodata_pixels`` counts them."""
    value, data = raster.nodata, raster.data
    if value is None or np.isnan(value):
        return raster  # NaN is missing already
    if data.dtype.kind in "ui":
        info = np.iinfo(data.dtype)
        if not (float(value).is_integer() and info.min <= value <= info.max):
            return raster  # no pixel of this type can hold it
    with np.errstate(over="ignore"):
        typed = np.asarray(value).astype(data.dtype)
    mask = data == typed
    n = int(np.count_nonzero(mask))
    if not n:
        return raster
    out = data.astype(np.float32 if data.dtype.itemsize <= 2 or data.dtype == np.float32 else np.float64)
    out[mask] = np.nan
    return TileRaster(out, raster.georef, raster.axes, raster.nodata, n, data.dtype)


def check_id_digits(tile_id: str) -> str:
    """``tile_id`` unless it holds a digit other than ASCII 0-9 (superscripts, circled or other
    scripts' digits look like numbers but are other ids); ValueError in one line then."""
    odd = next((c for c in tile_id if c.isdigit() and not c.isascii()), None)
    if odd is not None:
        raise ValueError(f"tile id {tile_id[:40]!r} holds the character {odd!r} (U+{ord(odd):04X}), a digit "
                         "that is not ASCII 0-9: name tiles with ASCII digits (e.g. 17.tiff)")
    return tile_id


def natural_key(tile_id: str) -> tuple:
    """Numeric ids (ASCII digits) in numeric order (2 before 10), then the rest by name."""
    return (0, int(tile_id), tile_id) if is_ascii_number(tile_id) else (1, 0, tile_id)


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


def check_sizes(tile_id: str, split: str, arrays: dict[str, np.ndarray]) -> tuple[int, int]:
    """The common (H, W) of one tile's modalities (arrays, or their shapes), or a one-line error
    listing each size."""
    sizes = {m: tuple(getattr(a, "shape", a)[-2:]) for m, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        detail = ", ".join(f"{m.upper() if m != LABEL else m} {h}x{w}" for m, (h, w) in sizes.items())
        raise InvalidDataError(f"tile {tile_id} ({split}): modalities disagree in size ({detail})")
    return next(iter(sizes.values()))


class BandCounts:
    """Every tile of a split must have the same number of bands per modality (the first tile sets it)."""

    def __init__(self, split: str):
        self.split = split
        self.bands: dict[str, tuple[int, str]] = {}  # modality -> (bands, the tile that set it)

    def check(self, modality: str, tile_id: str, bands: int) -> int:
        first = self.bands.setdefault(modality, (bands, tile_id))
        if first[0] != bands:
            raise InvalidDataError(f"{self.split}: {modality} tiles disagree in band count "
                                   f"({first[0]} in tile {first[1]}, {bands} in tile {tile_id})")
        return bands


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


def file_md5(path: str | Path, progress=None, block: int = 8 << 20) -> str:
    """MD5 of a file, streamed (``progress.update(n)`` per block when given)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return digest.hexdigest()


def distributed_md5_check(path: str | Path, progress=None) -> dict | None:
    """For an archive with a distributed name: its MD5, the expected one and whether they match."""
    expected = DISTRIBUTED_MD5.get(Path(path).name)
    if expected is None:
        return None
    md5 = file_md5(path, progress)
    return {"name": Path(path).name, "md5": md5, "expected_md5": expected, "match": md5 == expected}


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
