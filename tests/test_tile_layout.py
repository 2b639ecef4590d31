"""Tile-layout labels and submissions (docs/formats.md): what the writers put in the file, and
that a failed write leaves nothing behind."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from c2seg_kit.submission.tile_writers import (
    TileRasterWriter,
    tile_labels_writer,
    tile_submission_writer,
    write_tile_labels,
    write_tile_submission,
)


def tiles(seed=0):
    rng = np.random.default_rng(seed)
    return [("1", rng.integers(0, 14, (8, 8))), ("2", rng.integers(0, 14, (8, 5)).astype(np.uint8)),
            ("10", rng.integers(1, 14, (6, 6)).astype(np.int32))]


def test_labels_file_layout(tmp_path):
    path = write_tile_labels(tmp_path / "labels.h5", tiles(), "ab")
    with h5py.File(path) as f:
        assert {k: f.attrs[k] for k in ("c2seg_format", "track", "layout")} == \
            {"c2seg_format": "labels/1", "track": "AB", "layout": "tiles"}
        assert list(f.keys()) == ["label"] and sorted(f["label"]) == ["1", "10", "2"]
        for tid, ref in tiles():
            ds = f["label"][tid]
            assert ds.dtype == np.uint8 and ds.shape == ref.shape and ds.compression == "gzip"
            np.testing.assert_array_equal(ds[()], ref)
    assert list(tmp_path.iterdir()) == [path]


def test_submission_file_layout(tmp_path):
    path = write_tile_submission(tmp_path / "p.h5", tiles(), "BW", team="us", method="m")
    with h5py.File(path) as f:
        assert f.attrs["c2seg_format"] == "submission/1" and f.attrs["layout"] == "tiles"
        assert f.attrs["team"] == "us" and f.attrs["method"] == "m" and f.attrs["created"].endswith("Z")
        assert sorted(f["prediction"]) == ["1", "10", "2"]


@pytest.mark.parametrize("bad,message", [
    (("3", np.full((4, 4), 14)), "outside 0..13"),
    (("3", np.zeros((4, 4), np.float32)), "must hold integers"),
    (("3", np.zeros((4, 4, 2), np.uint8)), "2-D"),
    (("1", np.zeros((4, 4), np.uint8)), "already written"),
    (("a/b", np.zeros((4, 4), np.uint8)), "not a usable name"),
    (("", np.zeros((4, 4), np.uint8)), "not a usable name"),
    (("..", np.zeros((4, 4), np.uint8)), "not a usable name"),
])
def test_bad_tile_leaves_nothing_and_keeps_an_existing_file(tmp_path, bad, message):
    path = tmp_path / "labels.h5"
    path.write_bytes(b"the user's own file")
    with pytest.raises(ValueError, match=message):
        write_tile_labels(path, [*tiles(), bad], "AB")
    assert path.read_bytes() == b"the user's own file"
    assert list(tmp_path.iterdir()) == [path]


def test_expected_ids_must_all_be_written(tmp_path):
    with pytest.raises(ValueError, match="1 expected tiles were not written"):
        with tile_labels_writer(tmp_path / "l.h5", "AB", expected_ids=["1", "2", "10", "11"]) as w:
            for tid, t in tiles():
                w.write_tile(tid, t)
    with pytest.raises(ValueError, match="not one of the expected tiles"):
        with tile_submission_writer(tmp_path / "p.h5", "AB", expected_ids=["1"]) as w:
            w.write_tile("2", np.zeros((3, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_verify_hook_runs_before_the_file_appears(tmp_path):
    seen = []

    def verify(tmp):
        with h5py.File(tmp) as f:
            seen.append(sorted(f["label"]))
        raise ValueError("refused by verify")

    with pytest.raises(ValueError, match="refused by verify"):
        with TileRasterWriter(tmp_path / "l.h5", "label", {"track": "AB"}, verify=verify) as w:
            w.write_tile("7", np.ones((2, 2), np.uint8))
    assert seen == [["7"]] and list(tmp_path.iterdir()) == []


def test_unknown_track(tmp_path):
    with pytest.raises(ValueError, match="unknown track"):
        tile_labels_writer(tmp_path / "l.h5", "XY")
