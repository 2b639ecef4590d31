"""Training and prediction on a prepared tile cache: `c2seg synth --layout tiles`,
`c2seg prepare`, train a few steps, `c2seg predict` into a tile-layout submission.

The submission must hold exactly the test tile ids, each at its tile's shape, values 1..13, and
each tile must equal a naive per-tile loop over the same model (test_baseline_predict's per-pixel
blend); evaluation during training on labelled test tiles must equal scikit-learn's scores of
that naive prediction.
"""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from baseline_support import assert_one_line_error, config_file, run_cli, tiny_options
from metrics_support import oracle
from stitch_support import naive_blend
from tile_support import write_gdal

from c2seg_baseline import checkpoint as ckpt
from c2seg_baseline.datasets import C2SegPrepared, split_image
from c2seg_baseline.train import train
from c2seg_kit.prepare.cache import PreparedData


def _cli_ok(args):
    r = run_cli(args)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """A synthetic AB tile set (22 x 22 train tiles, 20 x 20 test tiles), its hidden labels, and two
    prepared caches: as distributed, and with the test labels added as label tiles."""
    root = tmp_path_factory.mktemp("tiles")
    data = root / "data"
    _cli_ok(["synth", str(data), "--track", "AB", "--layout", "tiles", "--scale", "0.05"])
    _cli_ok(["prepare", str(data), "--track", "AB", "--out", str(root / "prep")])
    labelled = root / "labelled"
    shutil.copytree(data, labelled)
    with h5py.File(data / "labels.h5") as f:
        hidden = {k: f["label"][k][()] for k in f["label"]}
    for tile_id, label in hidden.items():
        write_gdal(labelled / "C2Seg_AB" / "test" / "label" / f"{tile_id}.tiff", label)
    _cli_ok(["prepare", str(labelled), "--track", "AB", "--out", str(root / "prep-labelled")])
    return root, hidden


def test_training_windows_lie_inside_tiles_and_small_tiles_are_padded(tiles):
    root, _ = tiles
    with PreparedData(root / "prep") as data:
        ds = C2SegPrepared(data, "source", window=16, stride=8)
        shapes = {i: t.shape for i, t in data.source.rasters()}
        assert len(ds) == sum(_n(h, 16, 8) * _n(w, 16, 8) for h, w in shapes.values())  # a naive count per tile
        for k in (0, len(ds) - 1):
            item = ds[k]
            r0, c0 = item["origin"].tolist()
            tile = data.source.tile(item["tile"])
            msi = split_image(item["image"], ds.channels)["msi"]
            np.testing.assert_array_equal(msi.numpy(), tile.read("msi", r0, r0 + 16, c0, c0 + 16))
            assert r0 + 16 <= tile.shape[0] and c0 + 16 <= tile.shape[1]
        big = C2SegPrepared(data, "target", window=32, stride=16)  # 20 x 20 test tiles: one padded window each
        assert len(big) == len(data.target.ids)
        item = big[0]
        msi = split_image(item["image"], big.channels)["msi"].numpy()
        tile = data.target.tile(item["tile"]).read("msi", 0, 20, 0, 20)
        # reflected past the tile's edge, as prediction pads: row 20 repeats row 19, row 21 row 18
        assert msi.shape == (4, 32, 32)
        np.testing.assert_array_equal(msi[:, 20:32, :20], tile[:, 19:7:-1])


def _n(length, window, stride):
    """Windows along one axis: every stride, plus one snapped to the end when needed."""
    if length <= window:
        return 1
    starts = list(range(0, length - window + 1, stride))
    return len(starts) + (starts[-1] != length - window)


def test_train_and_predict_on_tiles_writes_the_test_tiles(tiles, tmp_path):
    root, hidden = tiles
    out = tmp_path / "run"
    summary = train(tiny_options(root / "prep", out, steps=2, eval_every=100))
    assert summary["step"] == 2 and not summary["metrics"]  # no target labels: no evaluation
    assert ckpt.read_checkpoint(out / "last.pt")["run"]["input"]["layout"] == "tiles"
    pred = tmp_path / "predictions.h5"
    r = _cli_ok(["predict", "--checkpoint", str(out / "last.pt"), "--data", str(root / "prep"), "--track", "AB",
                 "--out", str(pred), "--device", "cpu", "--quiet"])
    assert f"({len(hidden)} tiles, blend 64 px, overlap 16" in r.stdout  # the run's (tiny_options) settings
    model, _ = ckpt.load_checkpoint(out / "last.pt")
    with h5py.File(pred) as f, PreparedData(root / "prep") as data:
        assert f.attrs["layout"] == "tiles" and f.attrs["track"] == "AB"
        assert set(f["prediction"]) == set(hidden) == set(data.target.ids)
        for tile_id, raster in data.target.rasters():
            got = f["prediction"][tile_id][()]
            assert got.shape == raster.shape == hidden[tile_id].shape and got.dtype == np.uint8
            assert got.min() >= 1 and got.max() <= 13
            np.testing.assert_array_equal(got, naive_blend(model, raster, 64, 16).argmax(0) + 1)
    # the scoring side accepts it: valid against the hidden labels, and scored
    r = run_cli(["validate", str(pred), "--track", "AB", "--labels", str(root / "data" / "labels.h5")])
    assert r.returncode == 0, r.stderr
    scored = json.loads(_cli_ok(["score", str(pred), "--labels", str(root / "data" / "labels.h5"), "--json"]).stdout)
    assert scored["n_pixels"] == sum(int((t > 0).sum()) for t in hidden.values())


def test_evaluation_on_labelled_test_tiles_is_predict_scored(tiles, tmp_path):
    root, hidden = tiles
    out = tmp_path / "run"
    summary = train(tiny_options(root / "prep-labelled", out, steps=2, eval_every=2, eval_window=32,
                                 eval_overlap=8))
    model, _ = ckpt.load_checkpoint(out / "last.pt")
    with PreparedData(root / "prep-labelled") as data:
        ids = data.target.ids
        labels = np.concatenate([hidden[i].ravel() for i in ids])
        preds = np.concatenate([(naive_blend(model, data.target.tile(i), 32, 8).argmax(0) + 1).ravel() for i in ids])
    expected = oracle(labels, preds)
    assert summary["metrics"]["miou"] == pytest.approx(expected["miou"], abs=1e-12)
    assert summary["metrics"]["oa"] == pytest.approx(expected["oa"], abs=1e-12)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "eval" in r] == [2]


def test_evaluation_against_a_tile_layout_labels_file(tiles, tmp_path):
    """--labels with the hidden tile-layout labels.h5 (read by the kit's safe tile reader)."""
    root, hidden = tiles
    out = tmp_path / "run"
    summary = train(tiny_options(root / "prep", out, steps=2, eval_every=2, eval_window=32, eval_overlap=8,
                                 labels=root / "data" / "labels.h5"))
    model, _ = ckpt.load_checkpoint(out / "last.pt")
    with PreparedData(root / "prep") as data:
        ids = data.target.ids
        preds = np.concatenate([(naive_blend(model, data.target.tile(i), 32, 8).argmax(0) + 1).ravel() for i in ids])
    expected = oracle(np.concatenate([hidden[i].ravel() for i in ids]), preds)
    assert summary["metrics"]["miou"] == pytest.approx(expected["miou"], abs=1e-12)


def test_labels_that_are_not_the_test_tiles_are_refused_in_one_line(tiles, tmp_path):
    root, hidden = tiles
    from c2seg_kit.submission.tile_writers import write_tile_labels
    from c2seg_kit.submission.writers import write_labels

    fewer = write_tile_labels(tmp_path / "fewer.h5", [(i, hidden[i]) for i in sorted(hidden)[1:]], "AB")
    scene = write_labels(tmp_path / "scene.h5", np.ones((20, 20), np.uint8), "AB")
    for labels, message in ((fewer, "does not hold the prepared test tiles: 1 missing"),
                            (scene, "holds scene labels; the prepared target city is tiles")):
        out = tmp_path / labels.stem
        r = run_cli(["train-baseline", "--data", str(root / "prep"), "--track", "AB", "--out", str(out), "--config",
                     config_file(root), "--steps", "1", "--device", "cpu", "--quiet", "--labels", str(labels)])
        assert_one_line_error(r, message)
        assert not out.exists()
