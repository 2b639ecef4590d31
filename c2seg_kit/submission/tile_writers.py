"""The tile layout's writers (docs/formats.md): one dataset per test tile, streamed one tile at a
time into a temporary file that is renamed into place only when complete (and, with ``verify``,
checked; by default the safe reader must read back exactly the tiles written).

>>> with tile_labels_writer("labels.h5", "AB") as w:
...     for tile_id, label in tiles:
...         w.write_tile(tile_id, label)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from c2seg_kit.classes import as_class_map
from c2seg_kit.errors import InvalidDataError
from c2seg_kit.outputs import claim_file
from c2seg_kit.submission.formats import LABELS_FORMAT, LAYOUT_ATTR, LAYOUT_TILES, SUBMISSION_FORMAT, root_attrs
from c2seg_kit.submission.readers import open_labels, open_submission
from c2seg_kit.submission.tile_readers import CHUNK, LABEL_GROUP, MAX_TILES, PREDICTION_GROUP, check_tile_id
from c2seg_kit.submission.writers import AtomicH5Writer

__all__ = ["TileRasterWriter", "tile_labels_writer", "tile_submission_writer", "write_tile_labels",
           "write_tile_submission"]


class TileRasterWriter(AtomicH5Writer):
    """Writes a tile-layout class file: one dataset per tile in group ``group``, atomically.

    Tiles arrive one at a time (any order, each id once). ``expected_ids``, when given, must be
    written exactly (checked on close). The file appears under its name only when complete.
    """

    def __init__(self, path: str | os.PathLike, group: str, attrs: dict, *,
                 expected_ids: Iterable[str] | None = None, verify: Callable[[Path], None] | None = None,
                 overwrite: bool = True):
        claim_file(path, force=overwrite, need_folder=True)  # a user's mistake is named before a caller's bad id
        self.expected = None if expected_ids is None else {check_tile_id(t) for t in expected_ids}
        self.written: list[str] = []
        self.shapes: dict[str, tuple[int, int]] = {}  # id -> (H, W) of each tile written
        super().__init__(path, {**attrs, LAYOUT_ATTR: LAYOUT_TILES}, verify=verify, overwrite=overwrite)
        self.group_name = group
        self.group = self.file.create_group(group)

    def write_tile(self, tile_id: str, tile: Any) -> None:
        """One tile (H x W integers 0..13) under its id."""
        check_tile_id(tile_id)
        if tile_id in self.group:
            raise ValueError(f"tile {tile_id} was already written")
        if self.expected is not None and tile_id not in self.expected:
            raise ValueError(f"tile {tile_id} is not one of the expected tiles")
        if len(self.written) >= MAX_TILES:
            raise ValueError(f"more than {MAX_TILES} tiles")
        data = as_class_map(tile, f"tile {tile_id}")
        chunks = (min(CHUNK[0], data.shape[0]), min(CHUNK[1], data.shape[1]))
        self.group.create_dataset(tile_id, data=data, chunks=chunks, compression="gzip", compression_opts=4)
        self.written.append(tile_id)
        self.shapes[tile_id] = data.shape

    __call__ = write_tile

    def _finish(self) -> None:
        if self.expected is not None and set(self.written) != self.expected:
            missing = sorted(self.expected - set(self.written))
            raise ValueError(f"{len(missing)} expected tiles were not written (e.g. {', '.join(missing[:5])})")
        if not self.written:
            raise ValueError("no tiles were written")


def _verified(writer: TileRasterWriter, verify: Callable[[Path], None] | None) -> TileRasterWriter:
    """Unless the caller brings its own check, the finished file is opened by the safe reader,
    which must find exactly the tiles written, of their shapes, before the file appears."""
    if verify is not None:
        writer.verify = verify
        return writer
    track = writer.file.attrs["track"]

    def reopen(tmp: Path) -> None:
        if writer.group_name == LABEL_GROUP:
            with open_labels(tmp) as lab:
                if lab.layout != LAYOUT_TILES or lab.shapes != writer.shapes:
                    raise InvalidDataError(f"{tmp}: the labels file does not read back as written")
        else:
            with open_submission(tmp, track=track, expected_tiles=writer.shapes):
                pass  # structure, attributes, ids and shapes exactly as every reader will check them

    writer.verify = reopen
    return writer


def tile_labels_writer(path: str | os.PathLike, track: str, *, expected_ids: Iterable[str] | None = None,
                       verify: Callable[[Path], None] | None = None, overwrite: bool = True) -> TileRasterWriter:
    """A streaming writer of tile-layout hidden labels (``labels.h5``)."""
    attrs = root_attrs(LABELS_FORMAT, track)
    writer = TileRasterWriter(path, LABEL_GROUP, attrs, expected_ids=expected_ids, overwrite=overwrite)
    return _verified(writer, verify)


def tile_submission_writer(path: str | os.PathLike, track: str, *, team: str | None = None,
                           method: str | None = None, expected_ids: Iterable[str] | None = None,
                           verify: Callable[[Path], None] | None = None, overwrite: bool = True) -> TileRasterWriter:
    """A streaming writer of a tile-layout submission (``predictions.h5``)."""
    attrs = root_attrs(SUBMISSION_FORMAT, track, team=team, method=method)
    writer = TileRasterWriter(path, PREDICTION_GROUP, attrs, expected_ids=expected_ids, overwrite=overwrite)
    return _verified(writer, verify)


def write_tile_labels(path: str | os.PathLike, tiles: Iterable[tuple[str, Any]], track: str) -> Path:
    """Write (tile id, H x W labels) pairs as a tile-layout ``labels.h5``."""
    with tile_labels_writer(path, track) as writer:
        for tile_id, tile in tiles:
            writer.write_tile(tile_id, tile)
    return Path(path)


def write_tile_submission(path: str | os.PathLike, tiles: Iterable[tuple[str, Any]], track: str, *,
                          team: str | None = None, method: str | None = None) -> Path:
    """Write (tile id, H x W predictions) pairs as a tile-layout ``predictions.h5``."""
    with tile_submission_writer(path, track, team=team, method=method) as writer:
        for tile_id, tile in tiles:
            writer.write_tile(tile_id, tile)
    return Path(path)
