"""Per-tile class images as the challenge's teams wrote them: finding them in a folder, reading one.

The challenge took one prediction image per test tile; the winners wrote ``<id>.png`` or
``<id>_prediction.tif`` (as seen in their published file lists), others ``<id>.tif`` / ``<id>.tiff``. Label tiles
of the distribution are ``<id>.tiff``. Each image must hold one band of integer class ids:
PNGs in any single-band mode (greyscale L, palette P, whose indices are the ids, 16- or 32-bit
integer I;16 / I), TIFFs of one band of an integer type, pixel-interleaved or not (read by
:func:`c2seg_kit.io.geotiff.read_geotiff`). Colour images, several bands or floating-point
values are refused in one line: they are pictures of a map, not the map.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from c2seg_kit.errors import DatasetNotFoundError, InvalidDataError
from c2seg_kit.io.geotiff import MAX_TILE_SIDE, read_geotiff
from c2seg_kit.submission.tile_readers import check_tile_id

#: Image suffixes (any case) and the stem ending some teams added; the rest of the stem is the id.
IMAGE_SUFFIXES = (".png", ".tiff", ".tif")
STEM_ENDING = "_prediction"
NAMES_HELP = "<id>.png, <id>.tif, <id>.tiff or <id>_prediction.tif"
# Pillow modes of one band of integers; np.asarray gives the ids (palette indices for P).
_INTEGER_MODES = {"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"}


def image_id(name: str) -> str | None:
    """The tile id of an image file name (``17.png``, ``17_prediction.tif`` -> "17"); None otherwise."""
    if name.startswith("."):
        return None
    lower = name.lower()
    suffix = next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), None)
    if suffix is None:
        return None
    stem = name[: -len(suffix)]
    if stem.lower().endswith(STEM_ENDING) and len(stem) > len(STEM_ENDING):
        stem = stem[: -len(STEM_ENDING)]
    return stem or None


def class_image_files(folder: str | os.PathLike) -> dict[str, Path]:
    """tile id -> image file, for the images directly in ``folder``; an id found twice (``3.png``
    and ``3.tif``, say) is refused in one line, naming both files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder} is not a folder")
    found: dict[str, Path] = {}
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if e.is_file())
    for name in names:
        tile_id = image_id(name)
        if tile_id is None:
            continue
        try:
            check_tile_id(tile_id)
        except ValueError as e:
            raise InvalidDataError(f"{folder / name}: {e}") from None
        if tile_id in found:
            raise InvalidDataError(f"tile {tile_id} appears twice in {folder} ({found[tile_id].name}, {name}); keep one")
        found[tile_id] = folder / name
    return found


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            bands = img.getbands()
            if len(bands) > 1:
                raise InvalidDataError(f"{path.name} has {len(bands)} colour channels (mode {img.mode}); a class image "
                                       "holds one band of class ids (greyscale or palette)")
            if img.mode not in _INTEGER_MODES:
                raise InvalidDataError(f"{path.name} has mode {img.mode}; a class image holds integer class ids")
            if max(img.size) > MAX_TILE_SIDE:
                raise InvalidDataError(f"{path.name} is {img.size[1]} x {img.size[0]} pixels, over the tile size cap "
                                       f"({MAX_TILE_SIDE} px per side)")
            data = np.asarray(img)
    except InvalidDataError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise InvalidDataError(f"{path.name} is not a readable image ({type(e).__name__}: {e})") from None
    return data.astype(np.uint8) if data.dtype == bool else data


def _read_tiff(path: Path) -> np.ndarray:
    data = read_geotiff(path, where=path.name).data  # (C, H, W) whatever the interleave
    if data.shape[0] != 1:
        raise InvalidDataError(f"{path.name} has {data.shape[0]} bands (colour channels?); a class image holds "
                               "one band of class ids")
    if data.dtype.kind not in "ui":
        raise InvalidDataError(f"{path.name} holds {data.dtype} values; a class image holds integer class ids")
    return data[0]


def read_class_image(path: str | os.PathLike) -> np.ndarray:
    """One class image as (H, W) integers (values not checked here: the caller knows the range)."""
    path = Path(path)
    return _read_png(path) if path.name.lower().endswith(".png") else _read_tiff(path)
