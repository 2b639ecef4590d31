"""`c2seg pack` and `c2seg unpack`: between per-tile images and one tile-layout file.

- :func:`pack_tiles`: a folder of per-tile class images (:mod:`c2seg_kit.io.images`) into one
  tile-layout submission (or, for organizers, labels file), one tile at a time, into a temporary
  file renamed into place when complete and read back by the safe reader. With ``like`` the ids
  must be exactly the test tiles' and each image of its test tile's shape. ``add_one`` shifts
  0-based predictions (0..12, a model trained with "reduce zero label") to 1..13.
- predictions holding any 0 are refused (0 is no class): the line names the count and --add-one.
- :func:`unpack_tiles`: a tile-layout file into one single-band uint8 GeoTIFF per tile, carrying
  the matching test tile's georeferencing, nodata 0, in a new (or empty) folder that appears
  only when complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2seg_kit.classes import NUM_LABELS, as_class_ids, zero_prediction_refusal
from c2seg_kit.errors import DatasetNotFoundError, InvalidDataError, InvalidSubmissionError
from c2seg_kit.io.geotiff import write_geotiff
from c2seg_kit.io.images import NAMES_HELP, class_image_files, read_class_image
from c2seg_kit.io.tile_checks import natural_key
from c2seg_kit.io.tiles import open_test_split
from c2seg_kit.outputs import claim_file, claim_folder, publish_folder, temp_dir_in
from c2seg_kit.registry import Track
from c2seg_kit.submission.formats import LAYOUT_TILES
from c2seg_kit.submission.readers import open_class_raster
from c2seg_kit.submission.tile_readers import id_mismatch
from c2seg_kit.submission.tile_writers import tile_labels_writer, tile_submission_writer

#: Unpacked tiles are named <id><UNPACK_SUFFIX>.
UNPACK_SUFFIX = ".tif"
NODATA = 0


@dataclass
class Packed:
    path: Path
    n_tiles: int
    histogram: np.ndarray  # pixels per value 0..13, after any --add-one shift
    checked_against: int | None  # test tiles compared with (ids and shapes), None without --like

    @property
    def n_pixels(self) -> int:
        return int(self.histogram.sum())


def _test_shapes(like: Path, track: Track, ids: set[str], pred_dir: Path) -> dict[str, tuple[int, int]]:
    """The test tiles' (H, W) in their order; the images must be exactly those ids."""
    with open_test_split(like, track) as split:
        missing = [t for t in split.ids if t not in ids]
        extra = sorted(ids - set(split.ids), key=natural_key)
        if missing or extra:
            raise InvalidDataError(f"{pred_dir} must hold one image per test tile of {like} ({len(split.ids)}): "
                                   + id_mismatch(missing, extra))
        return {t: split.header(t)[0] for t in split.ids}


def _shifted(tile: np.ndarray, name: str) -> np.ndarray:
    """0-based class ids 0..12 -> 1..13; anything else is refused (it would leave 1..13)."""
    if tile.dtype.kind not in "ui":
        raise InvalidDataError(f"{name} must hold integers, got dtype {tile.dtype}")
    bad = (tile < 0) | (tile > NUM_LABELS - 2)
    if bad.any():
        seen = ", ".join(str(v) for v in np.unique(tile[bad])[:8])
        raise InvalidDataError(f"{name} has {int(bad.sum())} values outside 0..12, which --add-one would take "
                               f"beyond 13 (seen: {seen})")
    return tile.astype(np.uint8) + np.uint8(1)


def pack_tiles(pred_dir: str | os.PathLike, track: Track, out: str | os.PathLike, *, labels: bool = False,
               like: str | os.PathLike | None = None, add_one: bool = False, overwrite: bool = False,
               team: str | None = None, method: str | None = None,
               progress: Callable[[int], None] | None = None) -> Packed:
    """Pack the class images in ``pred_dir`` into one tile-layout file at ``out`` (see the module)."""
    pred_dir, out = Path(pred_dir), Path(out)
    if labels and add_one:
        raise ValueError("--add-one shifts 0-based predictions; label tiles are already 0..13")
    claim_file(out, force=overwrite, inputs=(pred_dir, like))
    files = class_image_files(pred_dir)
    if not files:
        raise DatasetNotFoundError(f"no class images ({NAMES_HELP}) in {pred_dir}")
    shapes = _test_shapes(Path(like), track, set(files), pred_dir) if like is not None else None
    order = list(shapes) if shapes is not None else sorted(files, key=natural_key)
    if labels:
        writer = tile_labels_writer(out, track.name, expected_ids=order, overwrite=overwrite)
    else:
        writer = tile_submission_writer(out, track.name, team=team, method=method, expected_ids=order,
                                        overwrite=overwrite)
    histogram = np.zeros(NUM_LABELS, dtype=np.int64)
    with_zeros: list[str] = []
    with writer:
        for tile_id in order:
            path = files[tile_id]
            tile = read_class_image(path)
            if tile.ndim != 2 or 0 in tile.shape:
                raise InvalidDataError(f"{path.name} is not a 2-D image (shape {tile.shape})")
            if shapes is not None and tile.shape != shapes[tile_id]:
                h, w = shapes[tile_id]
                raise InvalidDataError(f"{path.name} is {tile.shape[0]} x {tile.shape[1]}, but test tile {tile_id} is {h} x {w}")
            tile = _shifted(tile, path.name) if add_one else as_class_ids(tile, path.name, InvalidDataError)
            counts = np.bincount(tile.ravel(), minlength=NUM_LABELS)
            histogram += counts
            if counts[0] and not labels:
                with_zeros.append(path.name)
            writer.write_tile(tile_id, tile)
            if progress is not None:
                progress(1)
        if with_zeros:  # raised inside the writer: the temporary file goes, nothing appears
            raise InvalidDataError(zero_prediction_refusal(
                f"{pred_dir} ({len(with_zeros)} of {len(order)} images, e.g. {with_zeros[0]})", int(histogram[0]))
                + " (nothing was written)")
    return Packed(out, len(order), histogram, None if shapes is None else len(shapes))


def unpack_tiles(path: str | os.PathLike, like: str | os.PathLike, out: str | os.PathLike, *,
                 progress: Callable[[int], None] | None = None) -> tuple[int, Path]:
    """One GeoTIFF per tile of the tile-layout file ``path`` into the new or empty folder ``out``
    (see the module); returns (tiles written, out)."""
    from c2seg_kit.registry import get_track

    out = Path(out)
    claim_folder(out, verb="unpack", follow_link=False)
    with open_class_raster(path) as raster:
        if raster.layout != LAYOUT_TILES:
            raise InvalidSubmissionError(f"{Path(path).name} holds one raster of the scene; unpack takes a file of "
                                         "tiles (layout 'tiles', as c2seg pack writes it)")
        with open_test_split(like, get_track(raster.track)) as split:
            georefs = split.georefs_for(raster.shapes, Path(path).name)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = temp_dir_in(out.parent, prefix=f".{out.name}.partial-")
        try:
            for tile_id, tile in raster.iter_tiles():
                write_geotiff(partial / f"{tile_id}{UNPACK_SUFFIX}", tile, georefs[tile_id], nodata=NODATA)
                if progress is not None:
                    progress(1)
            publish_folder(partial, out, verb="unpack")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)  # only the folder this call created
            raise
    return len(raster.ids), out
