"""Opening a submission (``predictions.h5``) or a hidden-labels file (``labels.h5``) safely: the
readers everything that opens a prediction goes through (the CLI, the server, the demo).

They run the whole-file checks of :func:`c2seg_kit.h5safe.open_checked`, then this format's
attributes and the raster's type, shape and chunks, before reading any data; then they read row
bands (or tiles) and check values as they go. ``open_submission`` and ``open_labels`` hand back
the reader the file's layout calls for (:data:`READERS`). The format's shared rules are in
:mod:`c2seg_kit.submission.formats`, the writers in :mod:`c2seg_kit.submission.writers` and
:mod:`c2seg_kit.submission.tile_writers`, scoring two files in
:mod:`c2seg_kit.submission.score_files`.

>>> with open_submission("predictions.h5", track="AB", expected_shape=(2465, 811)) as sub:
...     for r0, block in sub.iter_rows(256):
...         ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import h5py

from c2seg_kit import h5safe
from c2seg_kit.errors import InvalidSubmissionError
from c2seg_kit.registry import get_track
from c2seg_kit.submission.formats import (
    LABELS_FORMAT,
    LAYOUT_SCENE,
    LAYOUT_TILES,
    SUBMISSION_FORMAT,
    ClassFile,
    Source,
    read_layout,
)
from c2seg_kit.submission.scene_readers import ClassRaster, Labels, Submission
from c2seg_kit.submission.tile_readers import TileLabels, TileSubmission

__all__ = ["READERS", "open_class_raster", "open_labels", "open_submission", "submission_track"]

#: The reader of each (format, layout).
READERS: dict[tuple[str, str], type[ClassFile]] = {
    (SUBMISSION_FORMAT, LAYOUT_SCENE): Submission,
    (SUBMISSION_FORMAT, LAYOUT_TILES): TileSubmission,
    (LABELS_FORMAT, LAYOUT_SCENE): Labels,
    (LABELS_FORMAT, LAYOUT_TILES): TileLabels,
}


def layout_mismatch(scene_cls: type[ClassRaster], found: str, track: str, expected: dict) -> str:
    """The refusal of a file in the other layout: which layout the track expects and how to get it."""
    name, what = scene_cls.dataset_name, scene_cls.what
    if found == LAYOUT_SCENE:
        return (f"{what} holds one '{name}' raster (the scene layout), but track {track} is scored on the "
                f"challenge's test tiles: pack one image per test tile with "
                f"`c2seg pack PRED_DIR --track {track} --out {name}s.h5` (tile layout)")
    h, w = expected["expected_shape"]
    return (f"{what} holds tiles (layout '{LAYOUT_TILES}'), but track {track} is scored on the whole scene: "
            f"send one '{name}' raster of {h} x {w} (the scene layout, as `c2seg predict` writes it)")


def check_tile_count(checked: h5safe.CheckedFile, scene_cls: type[ClassRaster], track: str | None) -> None:
    """Without the labels' tiles, a tile file may hold at most as many tiles as its track has
    test tiles (AB 140, BW 850): refused from the group's member count (one HDF5 call), before
    any member is looked at, however many the file holds."""
    file_track, _ = scene_cls.read_head(checked, track)
    group = checked.file.get(scene_cls.dataset_name)  # its link was checked first (``reads``)
    limit = get_track(file_track).test_tiles
    if isinstance(group, h5py.Group) and len(group) > limit:
        raise scene_cls.error(f"'/{scene_cls.dataset_name}' holds {len(group)} members, more than the {limit} test "
                              f"tiles of track {file_track}")


def _context(scene_cls: type[ClassRaster], expected: dict, limits: h5safe.Limits) -> h5safe.Context:
    if "expected_tiles" in expected:
        # With the labels' tiles known, a file may not hold many more members than they have: a
        # file of 100,000 links is refused from its member count, not walked link by link.
        cap = len(expected["expected_tiles"]) + limits.max_objects
        limits = dataclasses.replace(limits, max_group_members=min(limits.max_group_members, cap))
    return h5safe.Context(scene_cls.error, scene_cls.what, limits)


def _open(scene_cls: type[ClassRaster], source: Source, *, track: str | None,
          expected: dict | Callable[[str], Mapping[str, Any]], limits: h5safe.Limits) -> ClassFile:
    """Open ``source`` through the whole-file checks; the reader of its layout runs its own last.

    ``expected`` holds ``expected_shape`` (the scene layout) or ``expected_tiles`` (the tile
    layout): a file of the other layout is refused with :func:`layout_mismatch`. Given as a
    function of the file's track, it is called in the same open once the root's attributes are
    read (before the tree is walked), and may refuse the track by raising.
    """
    resolve = expected if callable(expected) else None
    expected = {} if resolve is not None else {k: v for k, v in expected.items() if v is not None}
    ctx = _context(scene_cls, expected, limits)
    found: dict[str, Any] = {}

    def root(checked: h5safe.CheckedFile) -> h5safe.Context:
        # What the file says it is (its format and track, as submission_track reads them), then
        # what it must hold for that track: one open decides both.
        file_track, _ = scene_cls.read_head(checked, track)
        expected.update((k, v) for k, v in resolve(file_track).items() if v is not None)
        return _context(scene_cls, expected, limits)

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
        found["reader"] = READERS[scene_cls.file_format, layout](checked, track, **expected)

    h5safe.open_checked(source, ctx, reads=(scene_cls.dataset_name,), root=root if resolve else None,
                        wide_groups=wide_groups, inspect=inspect)
    return found["reader"]


def open_submission(path: Source, *, track: str | None = None,
                    expected_shape: tuple[int, int] | None = None,
                    expected_tiles: Mapping[str, tuple[int, int]] | None = None,
                    expect: Callable[[str], Mapping[str, Any]] | None = None,
                    limits: h5safe.Limits = h5safe.DEFAULT_LIMITS) -> ClassFile:
    """Open a submission safely; raises InvalidSubmissionError with a one-line reason.

    ``track`` is checked when given; ``expected_shape`` (the scene labels' shape) or
    ``expected_tiles`` (tile id -> shape, the tile labels' :attr:`shapes`) also fix the layout the
    file must have. ``expect`` instead gives them as a function of the file's track, called in
    the same open as soon as the track is read (as :func:`submission_track` reads it): a server
    learns the track and checks the file against that track's labels in one parse.
    Values are checked while the data is read (``iter_blocks``, ``check_values``...).
    Returns a :class:`Submission` (scene layout) or a ``TileSubmission`` (tile layout).
    """
    if track is not None:
        get_track(track)  # a caller's mistake (ValueError), not the file's
    if expected_shape is not None and expected_tiles is not None:
        raise ValueError("give expected_shape (scene layout) or expected_tiles (tile layout), not both")
    if expect is not None and (expected_shape is not None or expected_tiles is not None):
        raise ValueError("give expect, or expected_shape / expected_tiles, not both")
    return _open(Submission, path, track=track, limits=limits,
                 expected=expect or {"expected_shape": expected_shape, "expected_tiles": expected_tiles})


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
