"""Tile-layout submissions and labels through the safe reader and scoring (docs/formats.md):
honest files read exactly one tile at a time; every kind of hostile_files.TILE_FILES is refused
with its own one-line reason; scene files keep their tight object bound; scores equal
scikit-learn over every tile's pixels concatenated (overlaps counted once per tile)."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
from hostile_files import TILE_FILES, honest_tile_file, honest_tiles, make_tile_target
from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score, jaccard_score

from c2seg_kit.classes import CLASS_NAMES
from c2seg_kit.errors import InvalidDataError, InvalidSubmissionError
from c2seg_kit.h5safe import Limits
from c2seg_kit.submission.readers import open_class_raster, open_labels, open_submission
from c2seg_kit.submission.scene_readers import Submission
from c2seg_kit.submission.score_files import score_files
from c2seg_kit.submission.tile_readers import TileLabels, TileSubmission
from c2seg_kit.submission.tile_writers import write_tile_labels, write_tile_submission
from c2seg_kit.submission.writers import write_labels, write_submission
from c2seg_kit.tiling import window_origins


@pytest.fixture
def target(tmp_path):
    return make_tile_target(tmp_path)


def tile_file(path, tiles: dict, *, attrs=None, group="prediction", **kw) -> str:
    """A tile-layout submission written by hand (h5py), each tile created with ``kw``."""
    attrs = {"c2seg_format": "submission/1", "track": "AB", "layout": "tiles"} if attrs is None else attrs
    with h5py.File(path, "w") as f:
        f.attrs.update(attrs)
        g = f.create_group(group)
        for tid, a in tiles.items():
            g.create_dataset(tid, data=a, **kw)
    return path


# ---- honest files ------------------------------------------------------------------------------

def test_roundtrip_in_natural_id_order(tmp_path, target):
    pred = honest_tiles(target)
    path = write_tile_submission(tmp_path / "p.h5", reversed(list(pred.items())), "AB", team="us")
    with open_submission(path, track="AB", expected_tiles=target.shapes) as sub:
        assert isinstance(sub, TileSubmission) and sub.layout == "tiles" and sub.track == "AB"
        assert sub.ids == [str(i) for i in range(12)]  # "10" after "9", as the labels list them
        assert sub.shapes == target.shapes and sub.attrs["team"] == "us"
        assert sub.n_pixels == sum(a.size for a in pred.values())
        assert sub.describe() == f"12 tiles, {sub.n_pixels:,} pixels"
        for tid, tile in sub.iter_tiles():
            assert tile.dtype == np.uint8
            np.testing.assert_array_equal(tile, pred[tid])
    with open_labels(target.path) as lab:
        assert isinstance(lab, TileLabels) and lab.expectation() == {"expected_tiles": target.shapes}
        np.testing.assert_array_equal(lab.read_tile("11"), target.tiles["11"])


@pytest.mark.parametrize("kw", [{}, {"chunks": (8, 8), "compression": "gzip", "shuffle": True},
                                {"chunks": (5, 16), "compression": "lzf"}, {"chunks": (32, 3), "fletcher32": True}])
@pytest.mark.parametrize("dtype", ["u1", "i2", "u4", "i8"])
def test_honest_storage_layouts_and_integer_types_read_exactly(tmp_path, target, kw, dtype):
    pred = {t: a.astype(dtype) for t, a in honest_tiles(target).items()}
    with open_submission(tile_file(tmp_path / "p.h5", pred, **kw), expected_tiles=target.shapes) as sub:
        for tid, tile in sub.iter_tiles():
            np.testing.assert_array_equal(tile, pred[tid])


def test_more_tiles_than_a_scene_file_may_hold_objects(tmp_path):
    # 300 members: far beyond the 64 objects a scene file may hold, fine in the tile group (BW has 850 test tiles).
    tiles = {str(i): np.full((2, 3), i % 14, np.uint8) for i in range(300)}
    with open_submission(write_tile_submission(tmp_path / "p.h5", tiles.items(), "BW")) as sub:
        sub.check_values()
        assert len(sub.ids) == 300


def test_scene_files_keep_their_object_bound(tmp_path):
    # The same 300 datasets in a file that does not say layout = tiles: refused before any walk of them.
    tiles = {str(i): np.full((2, 3), 1, np.uint8) for i in range(300)}
    path = tile_file(tmp_path / "p.h5", tiles, attrs={"c2seg_format": "submission/1", "track": "AB"})
    with pytest.raises(InvalidSubmissionError, match=r"^file holds too many objects \(more than 64\)"):
        open_submission(path)
    small = tile_file(tmp_path / "q.h5", dict(list(tiles.items())[:3]), attrs={"c2seg_format": "submission/1", "track": "AB"})
    with pytest.raises(InvalidSubmissionError, match=r"^'prediction' must be a dataset, got a group \(a file of tiles says so"):
        open_submission(small)


def test_open_class_raster_and_labels_error_class(tmp_path, target):
    with open_class_raster(target.path) as r:
        assert isinstance(r, TileLabels)
    with open_class_raster(honest_tile_file(tmp_path / "p.h5", target)) as r:
        assert isinstance(r, TileSubmission)
    bad = dict(target.tiles)
    bad["4"] = bad["4"].copy()
    bad["4"][0, 0] = 14
    path = tile_file(tmp_path / "l.h5", bad, attrs={"c2seg_format": "labels/1", "track": "AB", "layout": "tiles"},
                     group="label")
    with pytest.raises(InvalidDataError, match=r"^'label/4' has 1 values outside 0\.\.13 \(seen: 14\)$"):
        with open_labels(path) as lab:
            lab.check_values()


# ---- hostile tile files ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", TILE_FILES, ids=[k.name for k in TILE_FILES])
def test_every_hostile_tile_file_is_refused_with_its_reason(tmp_path, target, kind):
    path = kind.build(tmp_path / "hostile.h5", target)
    with pytest.raises(InvalidSubmissionError) as info:
        with open_submission(path, track="AB", expected_tiles=target.shapes) as sub:
            sub.check_values()
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    assert re.search(kind.reason, message), message
    # scoring says the same, and no label value
    with pytest.raises(InvalidSubmissionError) as scored:
        score_files(path, target.path)
    assert str(scored.value) == message


def test_the_leaking_tile_kind_really_reaches_the_labels(tmp_path, target):
    kind = next(k for k in TILE_FILES if k.leaks)
    path = kind.build(tmp_path / "hostile.h5", target)
    with h5py.File(path) as f:  # a naive reader follows the link to the hidden label tile
        np.testing.assert_array_equal(f["prediction/0"][()], target.tiles["0"])


def test_hostile_tile_catalogue_names_are_distinct():
    assert len({k.name for k in TILE_FILES}) == len({k.reason for k in TILE_FILES}) == len(TILE_FILES) == 11


def test_tile_file_for_scene_labels_says_which_layout(tmp_path, target):
    labels = write_labels(tmp_path / "labels.h5", np.ones((40, 30), np.uint8), "AB")
    with pytest.raises(InvalidSubmissionError) as info:
        score_files(honest_tile_file(tmp_path / "p.h5", target), labels)
    assert str(info.value) == ("submission holds tiles (layout 'tiles'), but track AB is scored on the whole scene: "
                               "send one 'prediction' raster of 40 x 30 (the scene layout, as `c2seg predict` writes it)")


def test_wrong_track_is_named_before_the_layout(tmp_path, target):
    path = write_submission(tmp_path / "p.h5", np.ones((4, 4), np.uint8), "BW")
    with pytest.raises(InvalidSubmissionError, match="^submission is for track BW, expected track AB$"):
        open_submission(path, track="AB", expected_tiles=target.shapes)


def test_without_labels_the_tiles_together_are_bounded_by_the_city(tmp_path):
    # Berlin (AB's target) has 2465 x 811 = 2.0 M pixels; three 1500 x 1000 tiles declare 4.5 M.
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f.attrs.update({"c2seg_format": "submission/1", "track": "AB", "layout": "tiles"})
        for i in range(3):
            f.create_dataset(f"prediction/{i}", shape=(1500, 1000), dtype="u1", chunks=(500, 500), compression="gzip")
    with pytest.raises(InvalidSubmissionError, match=r"^the tiles declare more than 3998230 pixels in all"):
        open_submission(tmp_path / "p.h5")


def test_chunks_are_bounded_over_all_tiles(tmp_path, target):
    path = tile_file(tmp_path / "p.h5", honest_tiles(target), chunks=(8, 8))  # 16 per tile, 8 for the narrow one
    with open_submission(path, limits=Limits(max_chunks=184)) as sub:
        sub.check_values()
    with pytest.raises(InvalidSubmissionError, match=r"^the tiles are split into more than 183 chunks in all"):
        open_submission(path, limits=Limits(max_chunks=183))


def test_without_labels_the_member_cap_is_the_tracks_test_tile_count(tmp_path, target):
    """Without labels, a file may hold at most its track's test tiles (AB 140): refused from the
    member count, before one member is looked at (the walk of 50,000 members took 50 s)."""
    from hostile_files import many_members, tiles_plus

    from c2seg_kit.submission.readers import submission_track

    path = tiles_plus(tmp_path / "p.h5", target, many_members)
    with pytest.raises(InvalidSubmissionError, match=r"^'/prediction' holds 100001 members, more than the 140 test "
                                                     r"tiles of track AB$"):
        open_submission(path)
    assert submission_track(path) == "AB"  # the track is read without walking the members
    labels = {str(i): np.full((1, 1), 1, np.uint8) for i in range(141)}
    over = tile_file(tmp_path / "l.h5", labels, attrs={"c2seg_format": "labels/1", "track": "AB", "layout": "tiles"},
                     group="label")
    with pytest.raises(InvalidDataError, match=r"^'/label' holds 141 members, more than the 140 test tiles of track AB$"):
        open_labels(over)


def test_group_member_cap_is_a_limit(tmp_path, target):
    path = honest_tile_file(tmp_path / "p.h5", target)
    with pytest.raises(InvalidSubmissionError, match=r"^'/prediction' holds 12 members, more than the 11 allowed$"):
        open_submission(path, limits=Limits(max_group_members=11))


def test_member_that_is_a_group_or_named_type(tmp_path, target):
    def edit(g):
        del g["2"]
        g.create_group("2")

    path = honest_tile_file(tmp_path / "p.h5", target)
    with h5py.File(path, "a") as f:
        edit(f["prediction"])
    with pytest.raises(InvalidSubmissionError, match=r"^'prediction/2' must be a dataset \(one tile\)"):
        open_submission(path, expected_tiles=target.shapes)


def test_empty_tile_group_and_missing_group(tmp_path):
    path = tile_file(tmp_path / "p.h5", {})
    with pytest.raises(InvalidSubmissionError, match=r"^'prediction' holds no tiles$"):
        open_submission(path)
    with h5py.File(path, "a") as f:
        del f["prediction"]
    with pytest.raises(InvalidSubmissionError, match=r"^missing group 'prediction' at the root of the file"):
        open_submission(path)


# ---- scoring ------------------------------------------------------------------------------------

def overlapping_tiles(scene: np.ndarray, tile: int, stride: int) -> dict[str, np.ndarray]:
    """The scene cut as the challenge cut it: a grid snapped to the edges, so edge tiles overlap."""
    origins = window_origins(scene.shape[0], scene.shape[1], tile, stride)
    return {str(i): scene[r : r + tile, c : c + tile] for i, (r, c) in enumerate(origins)}


def test_tile_scores_equal_sklearn_over_every_tiles_pixels(tmp_path):
    rng = np.random.default_rng(3)
    label = rng.integers(0, 14, (70, 45), dtype=np.uint8)
    label[label == 13] = 12  # class 13 absent from the labels...
    pred = np.where(rng.random(label.shape) < 0.6, label, rng.integers(0, 14, label.shape)).astype(np.uint8)
    lab_tiles, pred_tiles = overlapping_tiles(label, 20, 20), overlapping_tiles(pred, 20, 20)
    assert len(lab_tiles) == 12 and sum(a.size for a in lab_tiles.values()) > label.size  # overlaps
    labels = write_tile_labels(tmp_path / "labels.h5", lab_tiles.items(), "AB")
    sub = write_tile_submission(tmp_path / "p.h5", pred_tiles.items(), "AB")
    result = score_files(sub, labels)

    # The naive oracle: every tile's pixels concatenated (a pixel in two tiles counts twice).
    y_true = np.concatenate([lab_tiles[t].ravel() for t in lab_tiles])
    y_pred = np.concatenate([pred_tiles[t].ravel() for t in lab_tiles])
    keep = y_true > 0
    y_true, y_pred = y_true[keep], y_pred[keep]
    classes = list(range(1, 14))
    cm = confusion_matrix(y_true, y_pred, labels=list(range(14)))[1:]
    assert result["confusion_matrix"] == cm.tolist()
    assert result["n_pixels"] == keep.sum() and result["layout"] == "tiles" and result["n_tiles"] == 12
    assert result["oa"] == pytest.approx(np.mean(y_true == y_pred), abs=1e-12)
    present = [c for c in classes if (y_true == c).any() or (y_pred == c).any()]
    iou = jaccard_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    assert result["miou"] == pytest.approx(iou.mean(), abs=1e-12)
    assert result["per_class_iou"][CLASS_NAMES[12]] == (pytest.approx(iou[-1]) if 13 in present else None)
    assert result["f1"] == pytest.approx(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0), abs=1e-12)
    assert result["kappa"] == pytest.approx(cohen_kappa_score(y_true, y_pred), abs=1e-12)


def test_scene_scoring_keeps_its_keys(tmp_path):
    label = np.random.default_rng(0).integers(0, 14, (20, 10), dtype=np.uint8)
    result = score_files(write_submission(tmp_path / "p.h5", label, "AB"), write_labels(tmp_path / "l.h5", label, "AB"))
    assert set(result) == {"track", "oa", "miou", "f1", "kappa", "per_class_iou", "confusion_matrix", "n_pixels"}
    with open_submission(tmp_path / "p.h5") as sub:
        assert isinstance(sub, Submission) and sub.layout == "scene"
