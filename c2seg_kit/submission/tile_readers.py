"""The tile layout of the submission and labels files (docs/formats.md): its rules and its safe
readers (the writers are in :mod:`c2seg_kit.submission.tile_writers`).

For tracks scored on the challenge's tiles, ``predictions.h5`` and ``labels.h5`` carry the root
attribute ``layout = "tiles"`` and, instead of one raster, a group (``prediction`` resp.
``label``) holding one 2-D uint8 dataset per test tile, named by the tile's id (its file stem),
of that tile's shape, values 0..13.

Reading (:class:`TileSubmission`, :class:`TileLabels`, handed out by
:func:`c2seg_kit.submission.readers.open_submission` and ``open_labels`` for a file of this layout):
after the whole-file checks (where the group's members count against
``Limits.max_group_members``, :data:`MAX_TILES`), every member must be a hard-linked dataset
named by a plain tile id (:func:`check_tile_id`), each checked exactly as the scene raster (type,
shape, chunks, filters) before any pixel is read; with ``expected_tiles`` (the labels' ids and
shapes) the ids must match exactly. Pixels are then read one tile at a time, values checked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import h5py
import numpy as np
from h5py import h5d

from c2seg_kit import h5safe
from c2seg_kit.errors import InvalidDataError, InvalidSubmissionError
from c2seg_kit.io.tile_checks import check_id_digits, natural_key
from c2seg_kit.submission.formats import (
    LABELS_FORMAT,
    LAYOUT_TILES,
    MAX_SIZE_FACTOR,
    SUBMISSION_FORMAT,
    ClassFile,
    checked_bands,
    nominal_pixels,
)

__all__ = ["MAX_TILES", "TileLabels", "TileSubmission", "check_tile_id", "id_mismatch"]

PREDICTION_GROUP = "prediction"
LABEL_GROUP = "label"
#: Most tiles a tile-layout file may hold (the real Wuhan test split has 850): the safe reader's
#: cap on the members of the tile group, one number for the readers and the writers.
MAX_TILES = h5safe.DEFAULT_LIMITS.max_group_members
#: Ids a refusal lists before "...".
SHOWN_IDS = 5
MAX_TILE_ID_BYTES = 255
CHUNK = (256, 1024)
_BAD_ID = re.compile(r"[\x00-\x1f\x7f/]")


def check_tile_id(tile_id: Any) -> str:
    """A tile id usable as an HDF5 member name: a non-empty file stem, no '/', no control
    characters, and no digit other than ASCII 0-9 (:func:`c2seg_kit.io.tile_checks.check_id_digits`)."""
    if not isinstance(tile_id, str) or not tile_id or tile_id in (".", "..") or _BAD_ID.search(tile_id) \
            or len(tile_id.encode("utf-8")) > MAX_TILE_ID_BYTES:
        raise ValueError(f"tile id {tile_id!r} is not a usable name (a file stem without '/' or control characters)")
    return check_id_digits(tile_id)


def _shown_id(name: str) -> str:
    """A member name from the file, safe for a one-line message (quoted, escaped, shortened)."""
    return repr(name if len(name) <= 40 else name[:40] + "...")


def _some(ids: list[str], show=str) -> str:
    more = ", ..." if len(ids) > SHOWN_IDS else ""
    return ", ".join(show(t) for t in ids[:SHOWN_IDS]) + more


def id_mismatch(missing: list[str], extra: list[str], show_extra=str) -> str:
    """"2 missing (3, 4); 1 not among them (9)": how a set of tile ids differs from the expected one."""
    parts = [f"{len(missing)} missing ({_some(missing)})" if missing else "",
             f"{len(extra)} not among them ({_some(extra, show_extra)})" if extra else ""]
    return "; ".join(p for p in parts if p)


class _TileRasters(ClassFile):
    """A checked tile-layout class file: one raster per tile in group ``dataset_name``.

    ``ids`` lists the tile ids (the expected ones' order, else natural order: 2 before 10),
    ``shapes`` maps each id to its (H, W). Pixels are read one tile at a time
    (:meth:`read_tile`, :meth:`iter_tiles`), each tile's values checked as it is read.
    """

    layout = LAYOUT_TILES

    def __init__(self, checked: h5safe.CheckedFile, track: str | None, *,
                 expected_tiles: Mapping[str, tuple[int, int]] | None = None) -> None:
        super().__init__(checked, track)
        err, f, name = self.error, checked.file, self.dataset_name
        if name not in f:
            raise err(f"missing group '{name}' at the root of the file (layout '{LAYOUT_TILES}')")
        group = f.get(name)
        if not isinstance(group, h5py.Group):
            raise err(f"'{name}' must be a group of tiles (the file says layout '{LAYOUT_TILES}'), got a dataset")
        # One linear pass; the tree walk has capped the count and checked every link is hard.
        stored = {h5safe.decode_name(b): b for b in h5safe.member_names(group)}
        names = list(stored)
        if not names:
            raise err(f"'{name}' holds no tiles")
        for member in names:
            try:
                check_tile_id(member)
            except ValueError:
                raise err(f"'{name}' holds a member named {_shown_id(member)}, which is not a plain tile id "
                          "(a file stem without '/', control characters or digits other than ASCII 0-9)") from None
        if expected_tiles is not None:
            ids = [str(t) for t in expected_tiles]
            have, want = set(names), set(ids)
            missing = sorted(want - have, key=natural_key)
            extra = sorted(have - want, key=natural_key)
            if missing or extra:
                raise err(f"{self.what} must hold exactly the {len(ids)} test tiles: "
                          + id_mismatch(missing, extra, _shown_id))
        else:
            ids = sorted(names, key=natural_key)
        limit = MAX_SIZE_FACTOR * nominal_pixels(self.track)
        self._group, self._stored = group, stored
        self._layouts: dict[str, h5safe.RasterLayout] = {}
        pixels = chunks = 0
        for tile_id in ids:
            member = f"{name}/{tile_id}"
            dset = h5safe.open_member(group, stored[tile_id])
            if not isinstance(dset, h5d.DatasetID):
                raise err(f"'{member}' must be a dataset (one tile), got a group or a named type")
            shape = None if expected_tiles is None else tuple(expected_tiles[tile_id])
            layout = h5safe.check_raster(dset, member, self.ctx, expected_shape=shape)
            h, w = layout.shape
            pixels += h * w
            if layout.chunks is None:
                chunks += 1
            else:
                chunks += math.ceil(h / layout.chunks[0]) * math.ceil(w / layout.chunks[1])
            if expected_tiles is None and pixels > limit:
                raise err(f"the tiles declare more than {limit} pixels in all, far more than the target city has")
            if chunks > self.ctx.limits.max_chunks:
                raise err(f"the tiles are split into more than {self.ctx.limits.max_chunks} chunks in all; "
                          "write each tile as one chunk (or contiguous)")
            self._layouts[tile_id] = layout
        self.ids: list[str] = ids
        self.shapes: dict[str, tuple[int, int]] = {t: self._layouts[t].shape for t in ids}
        self.n_pixels = pixels

    # -- data -------------------------------------------------------------------------------

    def read_tile(self, tile_id: str) -> np.ndarray:
        """One tile as uint8 (H, W), its values checked; raises the reader's error class."""
        layout = self._layouts[tile_id]  # KeyError: not a tile of this file (a caller's mistake)
        member = f"{self.dataset_name}/{tile_id}"
        reader = self._checked.reader(h5safe.open_member(self._group, self._stored[tile_id]), layout, member)
        bands = checked_bands(reader.iter_bands(), member, self.error)
        _, first = next(bands)
        if first.shape[0] == layout.shape[0]:
            return first  # one band: the whole tile (the usual case, one chunk per tile)
        out = np.empty(layout.shape, dtype=np.uint8)
        out[: first.shape[0]] = first
        for r0, band in bands:
            out[r0 : r0 + band.shape[0]] = band
        return out

    def iter_tiles(self, ids: Iterable[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """``(id, tile)`` one tile at a time, in ``ids`` order (default: :attr:`ids`). (Reading the
        next tile ahead in a thread was measured slower on a loaded 2-core machine: tiles are small,
        and the GIL hand-offs cost more than the inflating they overlap.)"""
        for tile_id in self.ids if ids is None else ids:
            yield tile_id, self.read_tile(tile_id)

    def iter_blocks(self, chunk_rows: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """The tiles in :attr:`ids` order: two files holding the same ids yield aligned blocks."""
        return self.iter_tiles()

    def expectation(self) -> dict:
        """What a submission scored against these tiles must match (keywords of open_submission)."""
        return {"expected_tiles": self.shapes}

    def describe(self) -> str:
        return f"{len(self.ids)} tiles, {self.n_pixels:,} pixels"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(track={getattr(self, 'track', None)!r}, tiles={len(getattr(self, 'ids', ()))})"


class TileSubmission(_TileRasters):
    """An opened, structurally checked tile-layout submission (group ``prediction``)."""

    dataset_name = PREDICTION_GROUP
    file_format = SUBMISSION_FORMAT
    what = "submission"
    error = InvalidSubmissionError


class TileLabels(_TileRasters):
    """An opened, structurally checked tile-layout hidden-labels file (group ``label``)."""

    dataset_name = LABEL_GROUP
    file_format = LABELS_FORMAT
    what = "labels file"
    error = InvalidDataError
