"""The two class-raster files of a track, docs/formats.md: the submission (``predictions.h5``) and
the hidden labels (``labels.h5``). This module holds what every reader and writer of them shares:
the format names and root attributes, the two layouts, the size rules, and :class:`ClassFile`,
the base of the readers.

Both formats come in two layouts, named by the root attribute ``layout``: ``scene`` (absent
means scene) holds one raster of the target city (:mod:`c2seg_kit.submission.scene_readers`),
``tiles`` one raster per test tile in a group (:mod:`c2seg_kit.submission.tile_readers`).
:mod:`c2seg_kit.submission.readers` opens a file with the reader its layout calls for; both
kinds share ``track``, ``attrs``, ``layout``, ``check_values``, ``iter_blocks`` (aligned blocks
of two files of one layout), ``expectation`` (what a submission scored against these labels must
match) and ``describe``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, BinaryIO, TypeAlias

import numpy as np

from c2seg_kit import h5safe
from c2seg_kit.classes import OutOfRange, holds_class_ids
from c2seg_kit.errors import C2SegError
from c2seg_kit.registry import TRACKS, get_track, track_names

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "LABELS_FORMAT",
    "LAYOUT_ATTR",
    "LAYOUT_SCENE",
    "LAYOUT_TILES",
    "MAX_SIZE_FACTOR",
    "SUBMISSION_FORMAT",
    "ClassFile",
    "Source",
    "root_attrs",
]

SUBMISSION_FORMAT = "submission/1"
LABELS_FORMAT = "labels/1"
#: The root attribute naming the layout, and its two values (absent means scene).
LAYOUT_ATTR = "layout"
LAYOUT_SCENE = "scene"
LAYOUT_TILES = "tiles"
LAYOUTS = (LAYOUT_SCENE, LAYOUT_TILES)
DEFAULT_CHUNK_ROWS = 256
# Without an expected shape (validate with only --track), a raster (or all tiles together) may
# not declare more than this many times the target city's nominal pixel count. The challenge's
# tiles overlap at the edges, so their pixels add up to a little more than the city's.
MAX_SIZE_FACTOR = 2
#: Root attributes of both formats, in the order they are read: two required, three optional.
ROOT_ATTRS = ("c2seg_format", "track", "team", "method", "created")

#: What the readers open: a path, or a seekable binary file object.
Source: TypeAlias = str | os.PathLike | BinaryIO


def root_attrs(file_format: str, track: str, *, team: str | None = None, method: str | None = None) -> dict:
    """The root attributes a writer stores: format, the registry's spelling of the track, the
    creation time (ISO 8601 UTC) and the optional team and method (None: left out)."""
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    attrs = {"c2seg_format": file_format, "track": get_track(track).name, "created": created,
             "team": team, "method": method}
    return {k: v for k, v in attrs.items() if v is not None}


def read_layout(checked: h5safe.CheckedFile) -> str:
    """The file's layout from its root attribute (absent: scene); an unknown value is refused."""
    value = checked.str_attr(LAYOUT_ATTR)
    if value is None:
        return LAYOUT_SCENE
    if value not in LAYOUTS:  # never echoed: attribute content is the uploader's
        raise checked.ctx.error(f"unknown layout in root attribute '{LAYOUT_ATTR}'; expected one of {', '.join(LAYOUTS)}")
    return value


def checked_bands(bands: Iterator[tuple[int, np.ndarray]], what: str,
                  error: type[C2SegError]) -> Iterator[tuple[int, np.ndarray]]:
    """Row bands as uint8 after checking their values. Out-of-range values are counted over the
    whole raster, so the refusal says how many and which."""
    for r0, band in bands:
        if holds_class_ids(band):
            yield r0, band.astype(np.uint8, copy=False)
            continue
        # Bad values: finish counting over the rest of the raster, then refuse.
        tally = OutOfRange().add(band)
        for _, rest in bands:
            tally.add(rest)
        raise error(tally.message(f"'{what}'"))


def nominal_pixels(track: str) -> int:
    """The target city's nominal pixel count: the size bound when no shape is expected."""
    h, w = TRACKS[track].target.nominal_shape
    return h * w


class ClassFile:
    """What both layouts share: the checked file, its format, track and attributes, its lifetime.

    Subclasses fix ``dataset_name`` (the raster, or the group of tiles), ``file_format``, ``what``
    (the file's name in messages) and ``error``; a layout's reader adds its own checks in ``_check``.
    """

    dataset_name = ""
    file_format = ""
    what = ""
    error: type[C2SegError] = C2SegError
    layout = LAYOUT_SCENE

    def __init__(self, checked: h5safe.CheckedFile, track: str | None) -> None:
        self._checked = checked
        self.ctx = checked.ctx
        self.track, self.attrs = self.read_head(checked, track)

    @classmethod
    def read_head(cls, checked: h5safe.CheckedFile, track: str | None) -> tuple[str, dict[str, str]]:
        """The format (must be this class's), the track (``track`` when given) and the root
        attributes present, in the order ROOT_ATTRS lists them."""
        err = cls.error
        fmt = checked.str_attr("c2seg_format")
        if fmt is None:
            raise err(f"missing root attribute 'c2seg_format' (expected '{cls.file_format}')")
        if fmt != cls.file_format:
            shown = fmt if fmt in (SUBMISSION_FORMAT, LABELS_FORMAT) else "something else"
            raise err(f"root attribute 'c2seg_format' is {shown}, expected '{cls.file_format}'")
        file_track = checked.str_attr("track")
        if file_track is None:
            raise err(f"missing root attribute 'track' (expected one of {track_names()})")
        if file_track not in TRACKS:  # never echoed: attribute content is the uploader's
            raise err(f"unknown track in root attribute 'track'; expected one of {track_names()}")
        if track is not None and file_track != track.upper():
            raise err(f"{cls.what} is for track {file_track}, expected track {track.upper()}")
        attrs = {k: checked.str_attr(k) for k in ROOT_ATTRS}
        return file_track, {k: v for k, v in attrs.items() if v is not None}

    def check_values(self) -> int:
        """Read everything once, block by block, refusing values outside 0..13; keeps no data.
        Returns how many pixels are 0 (no class: legal in the format, but never a prediction)."""
        return sum(int(np.count_nonzero(block == 0)) for _, block in self.iter_blocks())

    # What each layout provides (see the module docstring).
    def iter_blocks(self, chunk_rows: int | None = None) -> Iterator[tuple[Any, np.ndarray]]:
        raise NotImplementedError

    def expectation(self) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        self._checked.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
