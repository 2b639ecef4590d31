"""Which C2Seg layout a path holds: scene files, a tile folder, or the tile zip (one rule for every verb)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from c2seg_kit.errors import DatasetNotFoundError, InvalidDataError
from c2seg_kit.io.tiles import find_tile_root, is_zip_path
from c2seg_kit.registry import Track


class DataLocation(NamedTuple):
    layout: str  # "scene" or "tiles"
    path: Path  # the scene folder, or what open_tiles opens (a folder or a zip)
    is_zip: bool = False


def locate_data(data_dir: str | Path, track: Track) -> DataLocation:
    """Scene files first, then tiles in the folder, then ``C2Seg_XX.zip`` in it; a zip path is tiles.

    Raises a one-line DatasetNotFoundError / InvalidDataError naming what was expected.
    """
    data_dir = Path(data_dir)
    if is_zip_path(data_dir):
        return DataLocation("tiles", data_dir, True)
    if data_dir.exists() and not data_dir.is_dir():
        raise InvalidDataError(f"{data_dir} is neither a data folder nor a zip archive")
    if not data_dir.is_dir():
        raise DatasetNotFoundError(f"data folder {data_dir} does not exist")
    if (data_dir / track.source.scene_file).is_file() or (data_dir / track.target.scene_file).is_file():
        return DataLocation("scene", data_dir)
    if find_tile_root(data_dir, track) is not None:
        return DataLocation("tiles", data_dir)
    archive = data_dir / f"{track.tile_dir}.zip"
    if is_zip_path(archive):  # the folder the participant downloaded the zip into
        return DataLocation("tiles", archive, True)
    raise DatasetNotFoundError(
        f"no C2Seg {track.name} data in {data_dir}: expected scene files "
        f"{track.source.scene_file} and {track.target.scene_file}, or tiles under {track.tile_dir}/train/msi "
        f"(or the zip {track.tile_dir}.zip)"
    )
