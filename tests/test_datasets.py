"""The TorchGeo-style datasets: documented samples, normalisations, windows, plot."""

from __future__ import annotations

import numpy as np
import pytest
from city_tiles import city_oracle, make_city_tiles
from tile_support import zip_folder

from c2seg_kit.classes import CLASSES
from c2seg_kit.errors import C2SegError
from c2seg_kit.prepare.cache import PreparedData
from c2seg_kit.prepare.pipeline import prepare
from c2seg_kit.registry import TRACKS
from c2seg_kit.tiling import window_origins

torch = pytest.importorskip("torch")
from c2seg_baseline.datasets import (  # noqa: E402
    MATPLOTLIB_HINT,
    C2SegPrepared,
    C2SegTiles,
    picture,
    plot_layout,
    split_image,
)

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
    ds = C2SegTiles(tiles[which], split="train", track="AB")
    written = tiles[3]
    assert len(ds) == 11 and ds.ids == [str(i) for i in range(11)]
    sample = ds[7]  # the 8 x 12 tile
    assert set(sample) == {"image", "mask", "tile"} and sample["tile"] == "7"
    # one float tensor, the modalities stacked hsi, msi, sar; the band names say which channel is which
    assert sample["image"].dtype == torch.float32 and tuple(sample["image"].shape) == (24 + 4 + 2, 8, 12)
    assert ds.channels == {"hsi": 24, "msi": 4, "sar": 2} and len(ds.band_names) == 30
    assert ds.band_names[0] == "hsi_1" and ds.band_names[24:26] == ["msi_1", "msi_2"] and ds.band_names[-1] == "sar_2"
    assert sample["mask"].dtype == torch.int64 and tuple(sample["mask"].shape) == (8, 12)
    for m, x in split_image(sample["image"], ds.channels).items():
        np.testing.assert_array_equal(x.numpy(), written[("train", "7")][m].astype(np.float32))
    np.testing.assert_array_equal(sample["mask"].numpy(), written[("train", "7")]["label"])
    test = C2SegTiles(tiles[which], track="AB", split="test")
    assert "mask" not in test[0] and len(test) == 4


def test_per_sample_minmax(tiles):
    ds = C2SegTiles(tiles[0], track="AB", split="train", normalise="minmax")
    written = tiles[3][("train", "2")]  # the tile with a 2 x 2 NaN block
    sample = ds[2]
    image = split_image(sample["image"], ds.channels)
    for m in ("msi", "sar"):
        x = image[m].numpy()
        assert np.isfinite(x).all() and x.min() == 0 and x.max() == 1
    msi = written["msi"].astype(np.float64)
    lo, hi = msi.min(axis=(1, 2), keepdims=True), msi.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(image["msi"].numpy(), (msi - lo) / (hi - lo), atol=1e-6)


def test_raw_tiles_normalised_by_a_prepared_cache_equal_the_cache(tiles):
    ds = C2SegTiles(tiles[1], split="test", track="AB", normalise=tiles[2])
    oracle = city_oracle(tiles[3], "test")
    assert ds.channels["hsi"] == 10 and ds.band_names[:2] == ["hsi_pc1", "hsi_pc2"]  # the cache's PCA components
    with PreparedData(tiles[2]) as data:
        for i, tile_id in enumerate(ds.ids):
            image = split_image(ds[i]["image"], ds.channels)
            tile = data.target.tile(tile_id)
            h, w = tile.shape
            for m in ("hsi", "msi", "sar"):
                np.testing.assert_array_equal(image[m].numpy(), tile.read(m, 0, h, 0, w))
                np.testing.assert_allclose(image[m].numpy(), oracle[m][tile_id], atol=2e-6)


def test_zip_dataset_in_worker_processes(tiles):
    from torch.utils.data import DataLoader

    ds = C2SegTiles(tiles[1], split="test", track="AB", normalise="minmax")
    seen = list(DataLoader(ds, batch_size=1, num_workers=2))
    assert [b["tile"][0] for b in seen] == ds.ids
    for batch, i in zip(seen, range(len(ds)), strict=True):
        assert torch.equal(batch["image"][0], ds[i]["image"])


def test_prepared_tiles_whole_and_windowed(tiles):
    whole = C2SegPrepared(tiles[2], "source")
    assert len(whole) == 11
    s = whole[7]
    assert set(s) == {"image", "mask", "tile", "origin"} and s["tile"] == "7" and s["origin"].tolist() == [0, 0]
    assert tuple(s["image"].shape) == (16, 8, 12) and whole.channels == {"hsi": 10, "msi": 4, "sar": 2}
    win = C2SegPrepared(tiles[2], "source", window=8, stride=4)
    with PreparedData(tiles[2]) as data:
        expected = [(tile_id, r, c) for tile_id, t in data.source.rasters() for r, c in window_origins(*t.shape, 8, 4)]
        assert [(s["tile"], *s["origin"].tolist()) for s in win] == expected
        s = win[5]
        tile = data.source.tile(s["tile"])
        r, c = s["origin"].tolist()
        np.testing.assert_array_equal(s["image"][14:].numpy(), tile.read("sar", r, r + 8, c, c + 8))
        np.testing.assert_array_equal(s["mask"].numpy(), tile.read_label(r, r + 8, c, c + 8))
    padded = C2SegPrepared(tiles[2], "test", modalities=["msi"], window=16)
    s = padded[2]  # the 12 x 8 test tile in a 16 x 16 window: reflected, no mask (test split)
    assert tuple(s["image"].shape) == (4, 16, 16) and "mask" not in s and padded.band_names == [f"msi_{i}" for i in (1, 2, 3, 4)]
    with PreparedData(tiles[2]) as data:
        msi = data.target.tile(s["tile"]).read("msi", 0, 12, 0, 8)
    np.testing.assert_array_equal(s["image"][:, :12, :8].numpy(), msi)
    np.testing.assert_array_equal(s["image"][:, 12:, :8].numpy(), msi[:, :7:-1])  # rows 11, 10, 9, 8
    np.testing.assert_array_equal(s["image"][:, :12, 8:].numpy(), msi[:, :, ::-1])  # columns 7 .. 0


def test_prepared_scene_cache_windows(prepared_ab):
    ds = C2SegPrepared(prepared_ab, "source")  # the paper's 128 px window for AB
    with PreparedData(prepared_ab) as data:
        h, w = data.source.shape
        assert len(ds) == len(window_origins(h, w, 128, 128))
        s = ds[len(ds) - 1]
        r, c = s["origin"].tolist()
        assert s["tile"] == "" and tuple(s["mask"].shape) == (128, 128)
        got = s["image"].numpy()[:10, : h - r, : w - c]
        np.testing.assert_array_equal(got, data.source.read("hsi", r, min(r + 128, h), c, min(c + 128, w)))


def test_picture_draws_each_modality_and_the_mask_in_class_colours(tiles):
    ds = C2SegPrepared(tiles[2], "source")
    sample = ds[7]
    img = ds.picture(sample, scale=3)
    corners = plot_layout((8, 12), 4, 3)
    assert img.mode == "RGB" and img.width > corners[-1][0] + 36 and img.height >= corners[0][1] + 24
    pixels = np.asarray(img)
    x, y = corners[3]
    mask = sample["mask"].numpy()
    expected = np.array([c.rgb for c in CLASSES], dtype=np.uint8)[mask].repeat(3, axis=0).repeat(3, axis=1)
    np.testing.assert_array_equal(pixels[y : y + 24, x : x + 36], expected)
    # the MSI panel shows the first three bands, each stretched to its 2..98 percentile
    x, y = corners[1]
    band = sample["image"][10].numpy().astype(np.float64)  # msi's first band follows hsi's 10
    lo, hi = np.percentile(band, (2, 98))
    red = np.rint(np.clip((band - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels[y : y + 24 : 3, x : x + 36 : 3, 0], red)
    with_pred = picture({**sample, "prediction": torch.ones(8, 12, dtype=torch.int64)}, ds.channels, scale=2, title="t")
    x, y = plot_layout((8, 12), 5, 2, title=True)[4]
    assert (np.asarray(with_pred)[y : y + 16, x : x + 24] == CLASSES[1].rgb).all()
    with pytest.raises(ValueError, match="classes 0..13"):
        picture({**sample, "mask": torch.full((8, 12), 14)}, ds.channels)


def test_old_keywords_and_order_still_work_with_a_deprecation_warning(tiles):
    with pytest.warns(DeprecationWarning, match="split"):
        old = C2SegPrepared(tiles[2], city="source")
    assert torch.equal(old[3]["image"], C2SegPrepared(tiles[2], "train")[3]["image"])
    with pytest.warns(DeprecationWarning, match="track"):
        old = C2SegTiles(tiles[0], "AB", "test")
    assert old.split == "test" and old.track.name == "AB" and len(old) == 4
    with pytest.raises(ValueError, match="modalities"):
        C2SegTiles(tiles[0], "train", modalities=["hsi", "lidar"])


def test_checksum_checks_the_distributed_zip(tiles, tmp_path):
    """A zip named as distributed must have the distributed MD5; another name has none to check."""
    ours = tmp_path / "C2Seg_AB.zip"
    ours.write_bytes(tiles[1].read_bytes())  # the synthetic zip under the distributed name: a different MD5
    with pytest.raises(C2SegError, match="MD5 .* is not the distributed archive's 1a7eddf6"):
        C2SegTiles(ours, "train", track="AB", checksum=True)
    assert len(C2SegTiles(ours, "train", track="AB")) == 11  # not checked unless asked
    other = tmp_path / "mine.zip"
    other.write_bytes(tiles[1].read_bytes())
    with pytest.raises(C2SegError, match="not a distributed archive name"):
        C2SegTiles(other, "train", track="AB", checksum=True)
    assert len(C2SegTiles(tiles[0], "train", track="AB", checksum=True)) == 11  # a folder: nothing to check


def test_plot_returns_a_matplotlib_figure(tiles):
    pytest.importorskip("matplotlib", reason="plot() draws with matplotlib, an optional package")
    from matplotlib.figure import Figure

    ds = C2SegPrepared(tiles[2], "train")
    fig = ds.plot(ds[7], suptitle="tile 7")
    assert isinstance(fig, Figure) and [ax.get_title() for ax in fig.axes] == ["HSI", "MSI", "SAR", "mask"]
    shown = fig.axes[3].get_images()[0].get_array()
    expected = np.array([c.rgb for c in CLASSES], dtype=np.uint8)[ds[7]["mask"].numpy()]
    np.testing.assert_array_equal(np.asarray(shown), expected)


def test_plot_without_matplotlib_is_one_line(tiles, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib.figure now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    ds = C2SegPrepared(tiles[2], "train")
    with pytest.raises(C2SegError) as e:
        ds.plot(ds[0])
    assert str(e.value) == MATPLOTLIB_HINT and "\n" not in MATPLOTLIB_HINT and "pip install matplotlib" in MATPLOTLIB_HINT


def test_kornia_augmentations_apply_to_a_sample_unchanged(tiles):
    """The sample format is what kornia's AugmentationSequential takes: image and mask move together."""
    K = pytest.importorskip("kornia.augmentation", reason="kornia is not installed")
    ds = C2SegPrepared(tiles[2], "train")
    sample = ds[7]
    # mark the mask into a channel of the image, so alignment after the augmentation can be checked
    image = sample["image"].clone()
    image[0] = sample["mask"].float()
    aug = K.AugmentationSequential(K.RandomHorizontalFlip(p=1.0), K.RandomVerticalFlip(p=1.0),
                                   data_keys=["image", "mask"])
    out_image, out_mask = aug(image[None], sample["mask"][None, None].float())
    assert tuple(out_image.shape) == (1, 16, 8, 12) and tuple(out_mask.shape) == (1, 1, 8, 12)
    torch.testing.assert_close(out_mask[0, 0], torch.flip(sample["mask"].float(), dims=(0, 1)))
    torch.testing.assert_close(out_image[0, 0], out_mask[0, 0])  # image and mask moved together
    torch.testing.assert_close(out_image[0, 1:], torch.flip(sample["image"][1:], dims=(1, 2)))


def test_torchgeo_augmentations_apply_to_a_sample_unchanged(tiles):
    """TorchGeo's own AugmentationSequential takes the whole sample dict (extra keys pass through)."""
    try:
        from torchgeo.transforms import AugmentationSequential
    except Exception:  # ImportError, or torchvision's failure to load beside the pinned CPU torch
        pytest.skip("torchgeo needs torchvision, which does not import beside the pinned CPU torch")
    import kornia.augmentation as K

    ds = C2SegPrepared(tiles[2], "train")
    sample = ds[7]
    out = AugmentationSequential(K.RandomHorizontalFlip(p=1.0), data_keys=["image", "mask"])(
        {"image": sample["image"][None], "mask": sample["mask"][None]})
    torch.testing.assert_close(out["image"][0], torch.flip(sample["image"], dims=(2,)))
    assert torch.equal(out["mask"][0].long(), torch.flip(sample["mask"], dims=(1,)))


def test_training_and_prediction_read_a_small_raster_alike(tiles):
    """One window reader: a training sample of a tile smaller than its window holds exactly what
    prediction feeds the network for that window (the images reflected, not zero-filled)."""
    from c2seg_baseline.windows import read_row

    ds = C2SegPrepared(tiles[2], "test", window=16)
    with PreparedData(tiles[2]) as data:
        for i in range(len(ds)):
            s = ds[i]
            tile = data.target.tile(s["tile"])
            fed = torch.from_numpy(np.concatenate([x[0] for x in read_row(tile, 0, [0], 16, 16)]))
            assert torch.equal(s["image"], fed)


def test_the_baseline_imports_no_private_name_of_the_core():
    import ast
    from pathlib import Path

    baseline = Path(__file__).resolve().parents[1] / "baseline"
    private = [(p.name, a.name) for p in sorted(baseline.glob("*.py"))
               for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.ImportFrom)
               and (node.module or "").startswith("c2seg_kit") for a in node.names
               if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []


def test_the_datamodule_without_lightning_says_how_to_install_it():
    import subprocess
    import sys

    code = ("import sys; sys.modules['lightning'] = None\n"
            "import c2seg_baseline.datamodule")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: C2SegDataModule needs the 'lightning' extra") and 'c2seg-kit[lightning]' in last
