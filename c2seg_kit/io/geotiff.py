"""One GeoTIFF tile: read it whatever its interleave, keep its georeferencing, write it the GDAL way.

The challenge tiles are GeoTIFFs written by GDAL with its defaults: pixel-interleaved
(PlanarConfiguration 1, so ``tifffile.imread`` gives H x W x bands), MinIsBlack with the
extra bands declared as unspecified ExtraSamples, strips of about 8 KiB, and GeoTIFF tags
(ModelTiepoint, ModelPixelScale, GeoKeyDirectory with an EPSG code). A band-first file
(PlanarConfiguration 2) is just as valid. The reader decides the axis order from the file's
own structure (tifffile's ``series[0].axes``), never from the sizes, and returns every image
as (C, H, W); a file that does not say which axis holds the bands is refused in one line.

Tiles may come from strangers: the declared size is checked before any pixel is read, against
the generic caps here and against what the caller expects (``check``: the tile reader bounds
each modality by its track's band count and tile size). GDAL's nodata value (its private tag
42113, ASCII text) is read too; which pixels it marks is the caller's business.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from c2seg_kit.errors import InvalidDataError
from c2seg_kit.outputs import new_file

# tifffile's axes of the first series -> how to reach (C, H, W). Anything else is undecidable:
# several pages of one size ("IYX", "QYX") may be bands, times or depths; the file does not say.
AXES_TO_CHW = {
    "YX": lambda a: a[None],
    "YXS": lambda a: a.transpose(2, 0, 1),  # pixel-interleaved (GDAL's default)
    "SYX": lambda a: a,  # band-first (PlanarConfiguration 2)
}
#: A tile larger than this (pixels per side, bytes) is refused before its pixels are read.
MAX_TILE_SIDE = 16384
MAX_TILE_BYTES = 2 << 30
#: GDAL writes strips of about this many bytes (TIFFDefaultStripSize).
GDAL_STRIP_BYTES = 8192

# GeoTIFF tags and keys (GeoTIFF 1.1, OGC 19-008r4)
TAG_PIXEL_SCALE, TAG_TIEPOINT, TAG_GEOKEYS, TAG_GEO_DOUBLES, TAG_GEO_ASCII = 33550, 33922, 34735, 34736, 34737
TAG_TRANSFORMATION = 34264  # a 4 x 4 matrix, instead of tie point + scale
TAG_GDAL_NODATA = 42113  # GDAL's private tag: the nodata value as ASCII text
KEY_MODEL_TYPE, KEY_RASTER_TYPE, KEY_CITATION = 1024, 1025, 1026
KEY_GEOGRAPHIC_TYPE, KEY_GEOG_CITATION, KEY_GEOG_ANGULAR_UNITS = 2048, 2049, 2054
KEY_PROJECTED_TYPE, KEY_PROJ_LINEAR_UNITS = 3072, 3076
USER_DEFINED = 32767
MAX_GEO_VALUES = 4096  # a real key directory holds tens of values

Source = "str | os.PathLike | typing.BinaryIO"


@dataclass(frozen=True)
class GeoRef:
    """A tile's georeferencing as its GeoTIFF tags state it (any part may be absent).

    ``tiepoint`` is (I, J, K, X, Y, Z): raster point (I, J) lies at model point (X, Y);
    ``pixel_scale`` is (sx, sy, sz) in model units per pixel; ``epsg`` the projected (or else
    geographic) CRS code from the key directory, None when user-defined or absent. The raw
    key directory and its parameter tags are kept so that a copy carries them unchanged.
    """

    tiepoint: tuple[float, ...] | None = None
    pixel_scale: tuple[float, ...] | None = None
    epsg: int | None = None
    geokeys: tuple[int, ...] = ()
    double_params: tuple[float, ...] = ()
    ascii_params: str = ""

    @property
    def origin(self) -> tuple[float, float] | None:
        """Model (x, y) of the upper-left corner of pixel (0, 0) (north-up rasters)."""
        if self.tiepoint is None or self.pixel_scale is None:
            return None
        i, j, _, x, y, _ = self.tiepoint
        return x - i * self.pixel_scale[0], y + j * self.pixel_scale[1]

    @property
    def pixel_size(self) -> tuple[float, float] | None:
        return None if self.pixel_scale is None else (self.pixel_scale[0], self.pixel_scale[1])

    def window(self, row: int, col: int) -> GeoRef:
        """The georeferencing of a window whose pixel (0, 0) is this raster's (row, col)."""
        origin = self.origin
        if origin is None:
            return self
        sx, sy = self.pixel_size
        return replace(self, tiepoint=(0.0, 0.0, 0.0, origin[0] + col * sx, origin[1] - row * sy, 0.0))

    def tiff_tags(self) -> list[tuple]:
        """The tags as tifffile's ``extratags`` (code, type, count, value, writeonce)."""
        tags = []
        if self.pixel_scale is not None:
            tags.append((TAG_PIXEL_SCALE, "d", 3, tuple(self.pixel_scale), True))
        if self.tiepoint is not None:
            tags.append((TAG_TIEPOINT, "d", len(self.tiepoint), tuple(self.tiepoint), True))
        if self.geokeys:
            tags.append((TAG_GEOKEYS, "H", len(self.geokeys), tuple(self.geokeys), True))
        if self.double_params:
            tags.append((TAG_GEO_DOUBLES, "d", len(self.double_params), tuple(self.double_params), True))
        if self.ascii_params:
            tags.append((TAG_GEO_ASCII, "s", 0, self.ascii_params, True))
        return tags

    @classmethod
    def utm(cls, epsg: int, x: float, y: float, pixel: float, citation: str) -> GeoRef:
        """A north-up WGS 84 / UTM raster with (x, y) at its upper-left corner, keyed as GDAL writes it."""
        ascii_params = f"{citation}|WGS 84|"
        keys = [
            (KEY_MODEL_TYPE, 0, 1, 1),  # projected
            (KEY_RASTER_TYPE, 0, 1, 1),  # pixel is area
            (KEY_CITATION, TAG_GEO_ASCII, len(citation) + 1, 0),
            (KEY_GEOG_CITATION, TAG_GEO_ASCII, len("WGS 84") + 1, len(citation) + 1),
            (KEY_GEOG_ANGULAR_UNITS, 0, 1, 9102),  # degree
            (KEY_PROJECTED_TYPE, 0, 1, epsg),
            (KEY_PROJ_LINEAR_UNITS, 0, 1, 9001),  # metre
        ]
        directory = (1, 1, 0, len(keys), *(v for key in keys for v in key))
        return cls((0.0, 0.0, 0.0, float(x), float(y), 0.0), (float(pixel), float(pixel), 0.0), epsg,
                   directory, (), ascii_params)


def _tag_values(page, code: int, where: str) -> tuple | None:
    tag = page.tags.get(code)
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, (bytes, str)):
        return value
    values = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else (value,)
    if len(values) > MAX_GEO_VALUES:
        raise InvalidDataError(f"{where}: GeoTIFF tag {code} holds {len(values)} values")
    return values


def _epsg(keys: tuple[int, ...]) -> int | None:
    """The projected CRS code, else the geographic one, from a key directory (inline values only)."""
    if len(keys) < 4:
        return None
    entries = {keys[i]: keys[i + 1 : i + 4] for i in range(4, min(len(keys), 4 + 4 * keys[3]) - 3, 4)}
    for key in (KEY_PROJECTED_TYPE, KEY_GEOGRAPHIC_TYPE):
        location, count, value = entries.get(key, (None, 0, 0))
        if location == 0 and count == 1 and 0 < value < USER_DEFINED:
            return int(value)
    return None


def read_georef(page, where: str) -> GeoRef | None:
    """The GeoTIFF tags of a tifffile page as a :class:`GeoRef`; None when it has none."""
    scale = _tag_values(page, TAG_PIXEL_SCALE, where)
    tie = _tag_values(page, TAG_TIEPOINT, where)
    keys = _tag_values(page, TAG_GEOKEYS, where)
    matrix = _tag_values(page, TAG_TRANSFORMATION, where)
    if scale is None and tie is None and keys is None and matrix is None:
        return None
    try:
        if tie is None and scale is None and matrix is not None and len(matrix) == 16 and matrix[1] == matrix[4] == 0:
            # a north-up ModelTransformation is the same as a tie point at pixel (0, 0) and a scale
            tie, scale = (0.0, 0.0, 0.0, matrix[3], matrix[7], 0.0), (matrix[0], -matrix[5], 0.0)
        scale = None if scale is None or len(scale) != 3 else tuple(float(v) for v in scale)
        tie = None if tie is None or len(tie) < 6 else tuple(float(v) for v in tie[:6])  # the first tie point
        keys = () if keys is None else tuple(int(v) for v in keys)
        doubles = tuple(float(v) for v in (_tag_values(page, TAG_GEO_DOUBLES, where) or ()))
    except (TypeError, ValueError):
        raise InvalidDataError(f"{where}: malformed GeoTIFF tags") from None
    ascii_params = _tag_values(page, TAG_GEO_ASCII, where) or ""
    if isinstance(ascii_params, bytes):
        ascii_params = ascii_params.decode("ascii", "replace")
    for values in (scale, tie):
        if values is not None and not all(np.isfinite(values)):
            raise InvalidDataError(f"{where}: GeoTIFF tie point or pixel scale is not finite")
    return GeoRef(tie, scale, _epsg(keys), keys, doubles, str(ascii_params)[:MAX_GEO_VALUES])


@dataclass(frozen=True)
class TileRaster:
    """One tile of one modality: pixels as (C, H, W) (labels: (H, W)) and its georeferencing.

    ``nodata``: the GDAL_NODATA value the file declares (None without one); ``nodata_pixels``:
    how many values a reader that masks them turned into NaN (0 as read from the file), and
    ``file_dtype`` the file's value type if that changed ``data``'s.
    """

    data: np.ndarray
    georef: GeoRef | None
    axes: str  # tifffile's axes of the file: "YXS" pixel-interleaved, "SYX" band-first, "YX" one band
    nodata: float | None = None
    nodata_pixels: int = 0
    file_dtype: np.dtype | None = None  # the file's type, when a reader changed it (nodata made NaN)


def read_nodata(page, where: str) -> float | None:
    """The GDAL_NODATA value of a tifffile page ("-3.4028234663852886e+38", "nan", "-9999"), or None."""
    tag = page.tags.get(TAG_GDAL_NODATA)
    if tag is None:
        return None
    value = tag.value
    text = (value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)).strip().rstrip("\x00").strip()
    try:
        if len(text) > 64:
            raise ValueError
        return float(text)
    except ValueError:
        raise InvalidDataError(f"{where}: its GDAL nodata tag holds {text[:40]!r}, not a number") from None


#: ``check(shape, dtype)`` of :func:`read_geotiff`: raises InvalidDataError for a tile it refuses.
HeaderCheck = Callable[[tuple[int, int, int], np.dtype], None]


def _describe(source) -> str:
    return str(getattr(source, "name", None) or source)


def _unreadable(e: Exception, where: str, compression: str) -> InvalidDataError:
    """The one-line refusal of a file tifffile could not parse or decode."""
    if isinstance(e, ValueError) and "imagecodecs" in str(e):
        return InvalidDataError(f"{where}: compressed with {compression}, which needs the imagecodecs "
                                "package (pip install imagecodecs)")
    if isinstance(e, ValueError):
        return InvalidDataError(f"{where} is not a readable GeoTIFF ({e})")
    return InvalidDataError(f"{where} is not a readable GeoTIFF ({type(e).__name__}: {e})")


class GeoTiffFile:
    """An open GeoTIFF whose header is read and checked, its pixels not yet decoded.

    ``chw`` is its (C, H, W) and ``dtype`` its value type, both from the header; :meth:`read`
    decodes the pixels (or, ``header_only``, gives an empty array of that shape). Opening
    refuses in one line (InvalidDataError) an unreadable file, an undecidable band axis, a size
    over the caps, or whatever ``check((C, H, W), dtype)`` refuses. A reader that must compare
    several files' headers before decoding any opens them all first (a context manager; close()
    when done).
    """

    def __init__(self, source: Source, *, where: str | None = None, check: HeaderCheck | None = None):
        import tifffile

        self.where = where or _describe(source)
        self._compression = "its compression"
        self._tif = None
        try:
            self._tif = tifffile.TiffFile(source)
            self._header(check)
        except InvalidDataError:
            self.close()
            raise
        except Exception as e:  # tifffile raises many types for damaged files
            self.close()
            raise _unreadable(e, self.where, self._compression) from None

    def _header(self, check: HeaderCheck | None) -> None:
        tif, where = self._tif, self.where
        if not tif.series:
            raise InvalidDataError(f"{where} is not a readable GeoTIFF (no image in it)")
        self._series = series = tif.series[0]
        axes, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
        if axes not in AXES_TO_CHW:
            raise InvalidDataError(
                f"{where}: cannot tell which axis holds the bands (tifffile axes {axes!r}, shape {shape}); "
                "expected one image with its bands as samples (pixel-interleaved or band-first)"
            )
        h, w = shape[axes.index("Y")], shape[axes.index("X")]
        values = int(np.prod(shape, dtype=np.int64))
        nbytes = values * dtype.itemsize
        if max(h, w) > MAX_TILE_SIDE or nbytes > MAX_TILE_BYTES:
            raise InvalidDataError(f"{where}: tile of {h}x{w} pixels, {nbytes} bytes is over the size caps "
                                   f"({MAX_TILE_SIDE} px per side, {MAX_TILE_BYTES} bytes)")
        self.axes, self.shape, self.dtype = axes, shape, dtype
        self.chw = (values // (h * w) if h * w else 0, h, w)
        if check is not None:
            check(self.chw, dtype)
        self._compression = getattr(tif.pages[0].compression, "name", self._compression)
        self.georef = read_georef(tif.pages[0], where)
        self.nodata = read_nodata(tif.pages[0], where)

    def read(self, header_only: bool = False) -> TileRaster:
        """The tile as (C, H, W) with its georeferencing and nodata value."""
        try:
            data = np.empty(self.shape, self.dtype) if header_only else self._series.asarray()
        except Exception as e:
            raise _unreadable(e, self.where, self._compression) from None
        return TileRaster(AXES_TO_CHW[self.axes](data), self.georef, self.axes, self.nodata)

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    def __enter__(self) -> GeoTiffFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_geotiff(source: Source, *, where: str | None = None, header_only: bool = False,
                 check: HeaderCheck | None = None) -> TileRaster:
    """Read a GeoTIFF as (C, H, W) whatever its interleave, with its georeferencing and nodata value.

    ``header_only`` returns an empty array of the right shape and dtype without reading pixels.
    ``check((C, H, W), dtype)`` runs on the header, before any pixel is decoded, and refuses by
    raising InvalidDataError. Raises InvalidDataError (one line) for an unreadable file, an
    undecidable band axis or a size over the caps (see :class:`GeoTiffFile`).
    """
    with GeoTiffFile(source, where=where, check=check) as tiff:
        return tiff.read(header_only)


def nodata_tag(nodata: int | float | None) -> list[tuple]:
    """GDAL's nodata tag (42113, ASCII) as tifffile ``extratags``; none for None."""
    if nodata is None:
        return []
    text = str(int(nodata)) if float(nodata).is_integer() else repr(float(nodata))
    return [(TAG_GDAL_NODATA, "s", 0, text, True)]


def rows_per_strip(width: int, bands: int, itemsize: int) -> int:
    """Rows per strip as GDAL chooses them: strips of about 8 KiB, at least one row."""
    return max(1, GDAL_STRIP_BYTES // (width * bands * itemsize))


def write_geotiff(path: str | os.PathLike, data: np.ndarray, georef: GeoRef | None = None, *,
                  nodata: int | float | None = None) -> Path:
    """Write (C, H, W) or (H, W) pixels as GDAL writes a GeoTIFF by default, atomically.

    Pixel-interleaved (PlanarConfiguration 1), MinIsBlack, the extra bands as unspecified
    ExtraSamples, uncompressed strips of about 8 KiB, the GeoTIFF tags of ``georef``, the
    GDAL_NODATA tag when ``nodata`` is given, and no tifffile-specific description, so readers
    see exactly what GDAL would have written.
    """
    import tifffile

    path = Path(path)
    data = np.asarray(data)
    if data.ndim == 3:
        pixels = np.ascontiguousarray(data.transpose(1, 2, 0))
        if pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
    elif data.ndim == 2:
        pixels = np.ascontiguousarray(data)
    else:
        raise ValueError(f"a tile must be (C, H, W) or (H, W), got shape {data.shape}")
    bands = pixels.shape[2] if pixels.ndim == 3 else 1
    with new_file(path) as tmp:
        tifffile.imwrite(
            tmp, pixels, photometric="minisblack", planarconfig="contig" if bands > 1 else None,
            rowsperstrip=rows_per_strip(pixels.shape[1], bands, pixels.dtype.itemsize),
            metadata=None, software=False, extratags=[*(georef.tiff_tags() if georef else ()), *nodata_tag(nodata)],
        )
    return path
