"""What one challenge tile may be, checked tile by tile: its file name and id (ASCII digits,
natural order), what its header may declare on a track (before any pixel is decoded), its GDAL
nodata as NaN, and the agreement of its modalities' sizes and band counts."""

from __future__ import annotations

import numpy as np

from c2seg_kit.errors import InvalidDataError
from c2seg_kit.io.geotiff import HeaderCheck, TileRaster
from c2seg_kit.registry import Track

LABEL = "label"
SUFFIXES = (".tiff", ".tif")  # any case
#: A tile may be up to this many times its track's tile side a side (AB 256 px, BW 512 px).
TILE_SIDE_MARGIN = 2
#: ...and hold at most the track's band count x that side squared x this many bytes per value
#: (float32; a float64 tile must be smaller): AB's HSI 63 MB, BW's 122 MB at most.
TILE_VALUE_BYTES = 4


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
