"""The TorchGeo-style datasets: documented samples, normalisations, windows, plot."""

from __future__ import annotations

import numpy as np
import pytest
from city_tiles import city_oracle, make_city_tiles
from tile_support import zip_folder

from c2seg_kit.classes import CLASSES
from c2seg_kit.prepare.cache import PreparedData
from c2seg_kit.prepare.pipeline import prepare
from c2seg_kit.registry import TRACKS
from c2seg_kit.tiling import window_origins

torch = pytest.importorskip("torch")
from c2seg_baseline.datasets import C2SegPrepared, C2SegTiles, plot, plot_layout  # noqa: E402

AB = TRACKS["AB"]


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    base = tmp_path_factory.mktemp("ds_tiles")
    written = make_city_tiles(base / "src" / "C2Seg_AB", seed=4)
    (base / "dist").mkdir()
    zipped = zip_folder(base / "src" / "C2Seg_AB", base / "dist" / "C2Seg_AB.zip")
    prepare(base / "src", AB, base / "prep", progress=False)
    return base / "src", zipped, base / "prep", written


@pytest.mark.parametrize("which", [0, 1], ids=["folder", "zip"])
def test_raw_tiles_samples(tiles, which):
    ds = C2SegTiles(tiles[which], track="AB", split="train")
    written = tiles[3]
    assert len(ds) == 11 and ds.ids == [str(i) for i in range(11)]
    sample = ds[7]  # the 8 x 12 tile
    assert set(sample) == {"image", "mask", "tile"} and sample["tile"] == "7"
    assert {m: tuple(t.shape) for m, t in sample["image"].items()} == {"hsi": (24, 8, 12), "msi": (4, 8, 12),
                                                                       "sar": (2, 8, 12)}
    assert all(t.dtype == torch.float32 for t in sample["image"].values())
    assert sample["mask"].dtype == torch.int64 and tuple(sample["mask"].shape) == (8, 12)
    np.testing.assert_array_equal(sample["image"]["hsi"].numpy(), written[("train", "7")]["hsi"])
    np.testing.assert_array_equal(sample["mask"].numpy(), written[("train", "7")]["label"])
    test = C2SegTiles(tiles[which], track="AB", split="test")
    assert "mask" not in test[0] and len(test) == 4


def test_per_sample_minmax(tiles):
    ds = C2SegTiles(tiles[0], track="AB", split="train", normalise="minmax")
    written = tiles[3][("train", "2")]  # the tile with a 2 x 2 NaN block
    sample = ds[2]
    for m in ("msi", "sar"):
        x = sample["image"][m].numpy()
        assert np.isfinite(x).all() and x.min() == 0 and x.max() == 1
    msi = written["msi"].astype(np.float64)
    lo, hi = msi.min(axis=(1, 2), keepdims=True), msi.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(sample["image"]["msi"].numpy(), (msi - lo) / (hi - lo), atol=1e-6)


def test_raw_tiles_normalised_by_a_prepared_cache_equal_the_cache(tiles):
    ds = C2SegTiles(tiles[1], track="AB", split="test", normalise=tiles[2])
    oracle = city_oracle(tiles[3], "test")
    with PreparedData(tiles[2]) as data:
        for i, tile_id in enumerate(ds.ids):
            sample = ds[i]
            tile = data.target.tile(tile_id)
            h, w = tile.shape
            for m in ("hsi", "msi", "sar"):
                np.testing.assert_array_equal(sample["image"][m].numpy(), tile.read(m, 0, h, 0, w))
                np.testing.assert_allclose(sample["image"][m].numpy(), oracle[m][tile_id], atol=2e-6)


def test_zip_dataset_in_worker_processes(tiles):
    from torch.utils.data import DataLoader

    ds = C2SegTiles(tiles[1], track="AB", split="test", normalise="minmax")
    seen = list(DataLoader(ds, batch_size=1, num_workers=2))
    assert [b["tile"][0] for b in seen] == ds.ids
    for batch, i in zip(seen, range(len(ds)), strict=True):
        assert torch.equal(batch["image"]["sar"][0], ds[i]["image"]["sar"])


def test_prepared_tiles_whole_and_windowed(tiles):
    whole = C2SegPrepared(tiles[2], "source")
    assert len(whole) == 11
    s = whole[7]
    assert set(s) == {"image", "mask", "tile", "origin"} and s["tile"] == "7" and s["origin"].tolist() == [0, 0]
    assert {m: tuple(t.shape) for m, t in s["image"].items()} == {"hsi": (10, 8, 12), "msi": (4, 8, 12),
                                                                  "sar": (2, 8, 12)}
    win = C2SegPrepared(tiles[2], "source", window=8, stride=4)
    with PreparedData(tiles[2]) as data:
        expected = [(tile_id, r, c) for tile_id, t in data.source.rasters() for r, c in window_origins(*t.shape, 8, 4)]
        assert [(s["tile"], *s["origin"].tolist()) for s in win] == expected
        s = win[5]
        tile = data.source.tile(s["tile"])
        r, c = s["origin"].tolist()
        np.testing.assert_array_equal(s["image"]["sar"].numpy(), tile.read("sar", r, r + 8, c, c + 8))
        np.testing.assert_array_equal(s["mask"].numpy(), tile.read_label(r, r + 8, c, c + 8))
    padded = C2SegPrepared(tiles[2], "target", window=16)
    s = padded[2]  # the 12 x 8 test tile in a 16 x 16 window: zero padded, no mask (test split)
    assert tuple(s["image"]["msi"].shape) == (4, 16, 16) and "mask" not in s
    assert (s["image"]["msi"][:, 12:, :] == 0).all() and (s["image"]["msi"][:, :, 8:] == 0).all()


def test_prepared_scene_cache_windows(prepared_ab):
    ds = C2SegPrepared(prepared_ab, "source")  # the paper's 128 px window for AB
    with PreparedData(prepared_ab) as data:
        h, w = data.source.shape
        assert len(ds) == len(window_origins(h, w, 128, 128))
        s = ds[len(ds) - 1]
        r, c = s["origin"].tolist()
        assert s["tile"] == "" and tuple(s["mask"].shape) == (128, 128)
        got = s["image"]["hsi"].numpy()[:, : h - r, : w - c]
        np.testing.assert_array_equal(got, data.source.read("hsi", r, min(r + 128, h), c, min(c + 128, w)))


def test_plot_draws_each_modality_and_the_mask_in_class_colours(tiles):
    ds = C2SegPrepared(tiles[2], "source")
    sample = ds[7]
    img = ds.plot(sample, scale=3)
    corners = plot_layout((8, 12), 4, 3)
    assert img.mode == "RGB" and img.width > corners[-1][0] + 36 and img.height >= corners[0][1] + 24
    pixels = np.asarray(img)
    x, y = corners[3]
    mask = sample["mask"].numpy()
    expected = np.array([c.rgb for c in CLASSES], dtype=np.uint8)[mask].repeat(3, axis=0).repeat(3, axis=1)
    np.testing.assert_array_equal(pixels[y : y + 24, x : x + 36], expected)
    # the MSI panel shows the first three bands, each stretched to its 2..98 percentile
    x, y = corners[1]
    band = sample["image"]["msi"][0].numpy().astype(np.float64)
    lo, hi = np.percentile(band, (2, 98))
    red = np.rint(np.clip((band - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels[y : y + 24 : 3, x : x + 36 : 3, 0], red)
    with_pred = plot({**sample, "prediction": torch.ones(8, 12, dtype=torch.int64)}, scale=2, title="t")
    x, y = plot_layout((8, 12), 5, 2, title=True)[4]
    assert (np.asarray(with_pred)[y : y + 16, x : x + 24] == CLASSES[1].rgb).all()
    with pytest.raises(ValueError, match="classes 0..13"):
        plot({**sample, "mask": torch.full((8, 12), 14)})
