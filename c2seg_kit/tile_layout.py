"""The tile layout of the submission and labels files (C2SEG.md section 4), and its writers.

For tracks scored on the challenge's tiles, ``predictions.h5`` and ``labels.h5`` carry the root
attribute ``layout = "tiles"`` and, instead of one raster, a group (``prediction`` resp.
``label``) holding one 2-D uint8 dataset per test tile, named by the tile's id (its file stem),
of that tile's shape, values 0..13. The writers stream one tile at a time into a temporary
file that is renamed into place only when complete (and, with ``verify``, checked).

>>> with tile_labels_writer("labels.h5", "AB") as w:
...     for tile_id, label in tiles:
...         w.write_tile(tile_id, label)
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import h5py

from c2seg_kit.classes import as_class_map
from c2seg_kit.errors import C2SegError
from c2seg_kit.submission import LABELS_FORMAT, SUBMISSION_FORMAT, root_attrs

LAYOUT_ATTR = "layout"
LAYOUT_SCENE = "scene"  # what an absent attribute means
LAYOUT_TILES = "tiles"
PREDICTION_GROUP = "prediction"
LABEL_GROUP = "label"
#: Most tiles a tile-layout file may hold (the real Wuhan test split has 850).
MAX_TILES = 100_000
MAX_TILE_ID_BYTES = 255
CHUNK = (256, 1024)
_BAD_ID = re.compile(r"[\x00-\x1f\x7f/]")


def check_tile_id(tile_id: Any) -> str:
    """A tile id usable as an HDF5 member name: a non-empty file stem, no '/', no control characters."""
    if not isinstance(tile_id, str) or not tile_id or tile_id in (".", "..") or _BAD_ID.search(tile_id) \
            or len(tile_id.encode("utf-8")) > MAX_TILE_ID_BYTES:
        raise ValueError(f"tile id {tile_id!r} is not a usable name (a file stem without '/' or control characters)")
    return tile_id


class TileRasterWriter:
    """Writes a tile-layout class file: one dataset per tile in group ``group``, atomically.

    Tiles arrive one at a time (any order, each id once). ``expected_ids``, when given, must be
    written exactly (checked on close). The file appears under its name only when complete.
    """

    def __init__(self, path: str | os.PathLike, group: str, attrs: dict, *,
                 expected_ids: Iterable[str] | None = None, verify: Callable[[Path], None] | None = None):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise C2SegError(f"output folder {self.path.parent} does not exist")
        self.expected = None if expected_ids is None else {check_tile_id(t) for t in expected_ids}
        self.verify = verify
        self.written: list[str] = []
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.file = h5py.File(self.tmp, "w")
        for key, value in {**attrs, LAYOUT_ATTR: LAYOUT_TILES}.items():
            if value is not None:
                self.file.attrs[key] = str(value)
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

    __call__ = write_tile

    def close(self, ok: bool = True) -> Path:
        try:
            self.file.close()
            if ok:
                if self.expected is not None and set(self.written) != self.expected:
                    missing = sorted(self.expected - set(self.written))
                    raise ValueError(f"{len(missing)} expected tiles were not written (e.g. {', '.join(missing[:5])})")
                if not self.written:
                    raise ValueError("no tiles were written")
                if self.verify is not None:
                    self.verify(self.tmp)
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
        return self.path

    def __enter__(self) -> TileRasterWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self.file.id.valid or self.tmp.exists():
            self.close(ok=exc_type is None)


def tile_labels_writer(path: str | os.PathLike, track: str, *, expected_ids: Iterable[str] | None = None,
                       verify: Callable[[Path], None] | None = None) -> TileRasterWriter:
    """A streaming writer of tile-layout hidden labels (``labels.h5``)."""
    attrs = root_attrs(LABELS_FORMAT, track)
    return TileRasterWriter(path, LABEL_GROUP, attrs, expected_ids=expected_ids, verify=verify)


def tile_submission_writer(path: str | os.PathLike, track: str, *, team: str | None = None,
                           method: str | None = None, expected_ids: Iterable[str] | None = None,
                           verify: Callable[[Path], None] | None = None) -> TileRasterWriter:
    """A streaming writer of a tile-layout submission (``predictions.h5``)."""
    attrs = root_attrs(SUBMISSION_FORMAT, track, team=team, method=method)
    return TileRasterWriter(path, PREDICTION_GROUP, attrs, expected_ids=expected_ids, verify=verify)


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
