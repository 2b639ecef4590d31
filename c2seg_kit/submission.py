"""The submission file (``predictions.h5``) and the hidden-labels file (``labels.h5``), docs/formats.md.

This module holds the format and its rules, and the safe readers everything that opens a
prediction goes through (the CLI, the server, the demo). Readers run the whole-file checks of
:func:`c2seg_kit.h5safe.open_checked`, then this format's attributes and the raster's type, shape
and chunks, before reading any data; then they read row bands and check values band by band.

Both formats come in two layouts, named by the root attribute ``layout``: ``scene`` (absent
means scene) holds one raster of the target city, ``tiles`` one raster per test tile in a group
(:mod:`c2seg_kit.tile_layout` reads those). ``open_submission`` and ``open_labels`` hand back the
reader the file's layout calls for; both kinds share ``track``, ``attrs``, ``layout``,
``check_values``, ``iter_blocks`` (aligned blocks of two files of one layout), ``expectation``
(what a submission scored against these labels must match) and ``describe``.
The writers live in :mod:`c2seg_kit.writers`, scoring two files in :mod:`c2seg_kit.scoring`.

>>> with open_submission("predictions.h5", track="AB", expected_shape=(2465, 811)) as sub:
...     for r0, block in sub.iter_rows(256):
...         ...
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, BinaryIO, TypeAlias

import h5py
import numpy as np

from c2seg_kit import h5safe
from c2seg_kit.classes import OutOfRange, holds_class_ids
from c2seg_kit.errors import C2SegError, InvalidDataError, InvalidSubmissionError
from c2seg_kit.registry import TRACKS, get_track, track_names

__all__ = [
    "LABELS_FORMAT",
    "LAYOUT_ATTR",
    "LAYOUT_SCENE",
    "LAYOUT_TILES",
    "SUBMISSION_FORMAT",
    "Labels",
    "Source",
    "Submission",
    "open_class_raster",
    "open_labels",
    "open_submission",
    "root_attrs",
    "submission_track",
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


# Names that moved out of this module with the writers and the scoring, still importable from
# here (PEP 562); importing them lazily keeps writers -> submission a one-way dependency.
_MOVED = {
    "RasterWriter": "c2seg_kit.writers",
    "submission_writer": "c2seg_kit.writers",
    "write_labels": "c2seg_kit.writers",
    "write_submission": "c2seg_kit.writers",
    "score_files": "c2seg_kit.scoring",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


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


class _ClassRaster(ClassFile):
    """A checked class-id raster of the scene layout; subclasses fix names and error class."""

    def __init__(self, checked: h5safe.CheckedFile, track: str | None, *,
                 expected_shape: tuple[int, int] | None = None) -> None:
        super().__init__(checked, track)
        err, f, name = self.error, checked.file, self.dataset_name
        if name not in f:
            raise err(f"missing dataset '{name}' at the root of the file")
        dset = f.get(name)
        if not isinstance(dset, h5py.Dataset):
            raise err(f"'{name}' must be a dataset, got a group (a file of tiles says so: root attribute "
                      f"{LAYOUT_ATTR} = '{LAYOUT_TILES}')")
        self._reader = checked.raster(dset, name, expected_shape=expected_shape,
                                      max_pixels=MAX_SIZE_FACTOR * nominal_pixels(self.track))
        self.shape: tuple[int, int] = self._reader.layout.shape
        self.dtype = self._reader.layout.dtype

    # -- data -------------------------------------------------------------------------------

    def _checked_bands(self) -> Iterator[tuple[int, np.ndarray]]:
        """Native row bands as uint8, after checking values."""
        return checked_bands(self._reader.iter_bands(), self.dataset_name, self.error)

    def iter_rows(self, chunk_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(r0, block)``: uint8 blocks of ``chunk_rows`` rows (the last may be shorter),
        top to bottom. Without ``chunk_rows`` the file's own row bands are yielded as they are.
        Raises the reader's error class as soon as a band holds values outside 0..13."""
        if chunk_rows is None:
            yield from self._checked_bands()
            return
        if int(chunk_rows) < 1:
            raise ValueError("chunk_rows must be >= 1")
        chunk_rows = int(chunk_rows)
        pending: list[np.ndarray] = []
        have = 0
        start = 0
        for _, band in self._checked_bands():
            pending.append(band)
            have += band.shape[0]
            while have >= chunk_rows:
                buf = pending[0] if len(pending) == 1 else np.concatenate(pending)
                yield start, buf[:chunk_rows]
                start += chunk_rows
                rest = buf[chunk_rows:]
                pending = [rest] if rest.shape[0] else []
                have = rest.shape[0]
        if have:
            yield start, pending[0] if len(pending) == 1 else np.concatenate(pending)

    iter_blocks = iter_rows

    def read(self) -> np.ndarray:
        """The whole raster as uint8 (checked band by band while it is filled)."""
        out = np.empty(self.shape, dtype=np.uint8)
        for r0, band in self._checked_bands():
            out[r0 : r0 + band.shape[0]] = band
        return out

    def expectation(self) -> dict:
        """What a submission scored against this raster must match (keywords of open_submission)."""
        return {"expected_shape": self.shape}

    def describe(self) -> str:
        h, w = self.shape
        return f"{h} x {w}, {self.dtype}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(track={getattr(self, 'track', None)!r}, shape={getattr(self, 'shape', None)})"


class Submission(_ClassRaster):
    """An opened, structurally checked submission (``prediction``, ``submission/1``), scene layout."""

    dataset_name = "prediction"
    file_format = SUBMISSION_FORMAT
    what = "submission"
    error = InvalidSubmissionError


class Labels(_ClassRaster):
    """An opened, structurally checked hidden-labels file (``label``, ``labels/1``), scene layout."""

    dataset_name = "label"
    file_format = LABELS_FORMAT
    what = "labels file"
    error = InvalidDataError


def layout_mismatch(scene_cls: type[_ClassRaster], found: str, track: str, expected: dict) -> str:
    """The refusal of a file in the other layout: which layout the track expects and how to get it."""
    name, what = scene_cls.dataset_name, scene_cls.what
    if found == LAYOUT_SCENE:
        return (f"{what} holds one '{name}' raster (the scene layout), but track {track} is scored on the "
                f"challenge's test tiles: pack one image per test tile with "
                f"`c2seg pack PRED_DIR --track {track} --out {name}s.h5` (tile layout)")
    h, w = expected["expected_shape"]
    return (f"{what} holds tiles (layout '{LAYOUT_TILES}'), but track {track} is scored on the whole scene: "
            f"send one '{name}' raster of {h} x {w} (the scene layout, as `c2seg predict` writes it)")


def _reader_class(scene_cls: type[_ClassRaster], layout: str) -> type[ClassFile]:
    if layout == LAYOUT_SCENE:
        return scene_cls
    # The tile readers subclass ClassFile, so their module imports this one; hence imported here.
    from c2seg_kit.tile_layout import TILE_READERS

    return TILE_READERS[scene_cls.file_format]


def check_tile_count(checked: h5safe.CheckedFile, scene_cls: type[_ClassRaster], track: str | None) -> None:
    """Without the labels' tiles, a tile file may hold at most as many tiles as its track has
    test tiles (AB 140, BW 850): refused from the group's member count (one HDF5 call), before
    any member is looked at, however many the file holds."""
    file_track, _ = scene_cls.read_head(checked, track)
    group = checked.file.get(scene_cls.dataset_name)  # its link was checked first (``reads``)
    limit = get_track(file_track).test_tiles
    if isinstance(group, h5py.Group) and len(group) > limit:
        raise scene_cls.error(f"'/{scene_cls.dataset_name}' holds {len(group)} members, more than the {limit} test "
                              f"tiles of track {file_track}")


def _open(scene_cls: type[_ClassRaster], source: Source, *, track: str | None, expected: dict,
          limits: h5safe.Limits) -> ClassFile:
    """Open ``source`` through the whole-file checks; the reader of its layout runs its own last.

    ``expected`` holds ``expected_shape`` (the scene layout) or ``expected_tiles`` (the tile
    layout): a file of the other layout is refused with :func:`layout_mismatch`.
    """
    expected = {k: v for k, v in expected.items() if v is not None}
    if "expected_tiles" in expected:
        # With the labels' tiles known, a file may not hold many more members than they have: a
        # file of 100,000 links is refused from its member count, not walked link by link.
        cap = len(expected["expected_tiles"]) + limits.max_objects
        limits = dataclasses.replace(limits, max_group_members=min(limits.max_group_members, cap))
    ctx = h5safe.Context(scene_cls.error, scene_cls.what, limits)
    found: dict[str, Any] = {}

    def wide_groups(checked: h5safe.CheckedFile) -> tuple[str, ...]:
        # Decided before the tree walk: only a file that says it holds tiles may hold many objects.
        found["layout"] = read_layout(checked)
        if found["layout"] != LAYOUT_TILES:
            return ()
        if "expected_tiles" not in expected:
            check_tile_count(checked, scene_cls, track)
        return (scene_cls.dataset_name,)

    def inspect(checked: h5safe.CheckedFile) -> None:
        layout = found["layout"]
        want = LAYOUT_TILES if "expected_tiles" in expected else LAYOUT_SCENE if expected else layout
        if layout != want:
            file_track, _ = scene_cls.read_head(checked, track)  # a wrong format or track is named first
            raise ctx.error(layout_mismatch(scene_cls, layout, file_track, expected))
        found["reader"] = _reader_class(scene_cls, layout)(checked, track, **expected)

    h5safe.open_checked(source, ctx, reads=(scene_cls.dataset_name,), wide_groups=wide_groups, inspect=inspect)
    return found["reader"]


def open_submission(path: Source, *, track: str | None = None,
                    expected_shape: tuple[int, int] | None = None,
                    expected_tiles: Mapping[str, tuple[int, int]] | None = None,
                    limits: h5safe.Limits = h5safe.DEFAULT_LIMITS) -> ClassFile:
    """Open a submission safely; raises InvalidSubmissionError with a one-line reason.

    ``track`` is checked when given; ``expected_shape`` (the scene labels' shape) or
    ``expected_tiles`` (tile id -> shape, the tile labels' :attr:`shapes`) also fix the layout the
    file must have. Values are checked while the data is read (``iter_blocks``, ``check_values``...).
    Returns a :class:`Submission` (scene layout) or a ``TileSubmission`` (tile layout).
    """
    if track is not None:
        get_track(track)  # a caller's mistake (ValueError), not the file's
    if expected_shape is not None and expected_tiles is not None:
        raise ValueError("give expected_shape (scene layout) or expected_tiles (tile layout), not both")
    return _open(Submission, path, track=track, limits=limits,
                 expected={"expected_shape": expected_shape, "expected_tiles": expected_tiles})


def submission_track(path: Source, *, limits: h5safe.Limits = h5safe.DEFAULT_LIMITS) -> str:
    """The track a submission is for: its bytes and global heaps checked, then its format and
    track attributes read, without walking its objects (:func:`c2seg_kit.h5safe.read_root`): a
    server learns which labels to check the file against at the cost of one scan of its bytes."""
    ctx = h5safe.Context(Submission.error, Submission.what, limits)
    track = h5safe.read_root(path, ctx, lambda checked: Submission.read_head(checked, None)[0])
    if hasattr(path, "seek"):
        path.seek(0)  # type: ignore[union-attr]
    return track


def open_labels(path: Source) -> ClassFile:
    """Open a hidden-labels file (either layout) through the same checks; raises InvalidDataError."""
    return _open(Labels, path, track=None, expected={}, limits=h5safe.DEFAULT_LIMITS)


def open_class_raster(path: Source) -> ClassFile:
    """Open a submission or a labels file, whichever ``c2seg_format`` says (for render and tools
    that accept both), in either layout. Unknown files are refused as submissions."""
    ctx = h5safe.Context(InvalidSubmissionError, "file")
    file_format = h5safe.read_root(path, ctx, lambda checked: checked.str_attr("c2seg_format"))
    if hasattr(path, "seek"):
        path.seek(0)  # type: ignore[union-attr]
    return open_labels(path) if file_format == LABELS_FORMAT else open_submission(path)
