"""The tile reader against hostile headers, nodata and extreme values, and odd tile ids.

A tile's header is checked against its track before any pixel is decoded: band counts (an AB
archive of 12,000-band HSI tiles made `prepare` use 3.5 GB), sides (a few MB of DEFLATE tiles
declaring thousands of pixels a side decoded into GBs), and the modalities' sizes against each
other. GDAL's nodata value (tag 42113) marks pixels as missing: they are repaired and counted
like NaN, so four -3.4e38 pixels no longer squeeze a city's SAR into a constant; values near
+-3e38 never become NaN samples. Tile ids are file stems with ASCII digits only ("³" and "①"
pass `str.isdigit` but not `int`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from cli_support import run_cli as run
from tile_support import make_tiles, write_gdal

from c2seg_kit.errors import InvalidDataError
from c2seg_kit.io.tile_checks import natural_key
from c2seg_kit.io.tiles import open_tiles
from c2seg_kit.prepare.cache import PreparedData
from c2seg_kit.registry import TRACKS

AB = TRACKS["AB"]
F32_NODATA = -3.4028234663852886e38  # GDAL's usual float32 nodata


@pytest.fixture
def decoded(monkeypatch):
    """The shapes of every TIFF series whose pixels are decoded while the test runs."""
    seen: list[tuple] = []
    original = tifffile.TiffPageSeries.asarray

    def asarray(self, *args, **kwargs):
        seen.append(tuple(self.shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", asarray)
    return seen


def one_line(code, out, err, *words) -> None:
    assert code == 1 and out == "" and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err


# ---- band counts and sizes, from the header ----------------------------------------------------

def test_more_hsi_bands_than_the_track_has_are_refused_before_decoding(tmp_path, capsys, decoded):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    write_gdal(root / "train" / "hsi" / "1.tiff", np.zeros((243, 4, 4), np.int16))  # "1" is read first
    for verb in (["info", tmp_path, "--track", "AB"], ["prepare", tmp_path, "--track", "AB", "--out", tmp_path / "p"]):
        code, out, err = run(capsys, *verb, "--quiet")
        one_line(code, out, err, "train/hsi/1.tiff: HSI tile of 243 bands; track AB's HSI tiles have 242")
    assert not any(243 in shape for shape in decoded)  # refused from the header
    assert not (tmp_path / "p").exists()


def test_msi_and_sar_must_have_the_tracks_band_count(tmp_path, capsys):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    write_gdal(root / "test" / "sar" / "1.tiff", np.zeros((3, 16, 16), np.float32))
    code, out, err = run(capsys, "info", tmp_path, "--track", "AB", "--quiet")
    one_line(code, out, err, "test/sar/1.tiff: SAR tile of 3 bands; track AB's SAR tiles have 2")


def test_info_says_when_hsi_holds_a_subset_of_the_tracks_bands(tmp_path, capsys):
    make_tiles(tmp_path / "C2Seg_AB")  # 6 HSI bands, as a user's own band subset
    code, out, _ = run(capsys, "info", tmp_path, "--track", "AB", "--quiet")
    assert code == 0 and "6 of the track's 242 HSI bands (a subset)" in out
    code, out, _ = run(capsys, "info", tmp_path, "--track", "AB", "--quiet", "--json")
    assert json.loads(out)["train"]["modalities"]["hsi"]["expected_bands"] == 242


def test_a_deflate_bomb_is_refused_from_its_header(tmp_path, capsys, decoded):
    """A 2,048 x 2,048 tile of zeros (32 MiB of MSI) deflates to a few hundred KiB; AB's tiles are
    128 px, accepted up to 256: refused before its pixels are inflated."""
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    bomb = root / "train" / "msi" / "1.tiff"
    tifffile.imwrite(bomb, np.zeros((2048, 2048, 4), np.uint16), photometric="minisblack", compression="zlib",
                     planarconfig="contig")
    assert bomb.stat().st_size < 1 << 20
    code, out, err = run(capsys, "info", tmp_path, "--track", "AB", "--quiet")
    one_line(code, out, err, "train/msi/1.tiff: tile of 2048 x 2048 pixels; track AB's tiles are at most 128 px "
                             "a side (accepted up to 256)")
    assert not any(2048 in shape for shape in decoded)


def test_the_modalities_sizes_are_compared_before_any_is_decoded(tmp_path, capsys, decoded):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    write_gdal(root / "train" / "hsi" / "1.tiff", np.zeros((6, 200, 200), np.int16))  # within the side bound
    code, out, err = run(capsys, "info", tmp_path, "--track", "AB", "--quiet")
    one_line(code, out, err, "tile 1 (train): modalities disagree in size (HSI 200x200, MSI 16x16, SAR 16x16")
    assert decoded == []  # tile "1" is the first read: nothing at all was decoded


def test_the_datasets_refuse_a_bomb_from_its_header(tmp_path, decoded):
    pytest.importorskip("torch")
    from c2seg_baseline.datasets import C2SegTiles

    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    write_gdal(root / "test" / "hsi" / "2.tiff", np.zeros((6, 300, 300), np.int16))
    ds = C2SegTiles(tmp_path, track="AB", split="test", normalise="minmax")
    with pytest.raises(InvalidDataError, match="tile of 300 x 300 pixels"):
        ds[1]
    assert not any(300 in shape for shape in decoded)


# ---- nodata and extreme values -----------------------------------------------------------------

def _sar_with(root, values: dict, nodata=None) -> None:
    """Train SAR tile "1" rewritten with ``values`` at some pixels ({(band, row, col): value})."""
    rng = np.random.default_rng(3)
    sar = rng.normal(-12, 4, (2, 16, 16)).astype(np.float32)
    for at, v in values.items():
        sar[at] = v
    write_gdal(root / "train" / "sar" / "1.tiff", sar, nodata=nodata)


FOUR = {(0, 0, 0): F32_NODATA, (0, 5, 5): F32_NODATA, (1, 9, 3): F32_NODATA, (1, 15, 15): F32_NODATA}


def test_gdal_nodata_pixels_are_missing_in_info(tmp_path, capsys):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    _sar_with(root, FOUR, nodata=F32_NODATA)
    code, out, _ = run(capsys, "info", tmp_path, "--track", "AB", "--quiet", "--json")
    sar = json.loads(out)["train"]["modalities"]["sar"]
    assert code == 0 and sar["nodata_pixels"] == 4 and sar["nodata"] == [pytest.approx(F32_NODATA)]
    assert sar["min"] > -100 and sar["outlier_bands"] == []
    assert sar["nan"] == 2  # make_tiles' own NaN pixel in train tiles 2 and 3; the nodata ones apart
    code, out, _ = run(capsys, "info", tmp_path, "--track", "AB", "--quiet")
    assert "nodata 4 (value -3.40282e+38)" in out


def test_nodata_pixels_are_repaired_not_scaled(tmp_path, capsys):
    """Four -3.4e38 pixels declared nodata: repaired and counted like NaN; the city's SAR keeps its range."""
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    _sar_with(root, FOUR, nodata=F32_NODATA)
    code, out, err = run(capsys, "prepare", tmp_path, "--track", "AB", "--out", tmp_path / "p", "--quiet",
                         "--pca-components", "3")
    assert code == 0, err
    with PreparedData(tmp_path / "p") as data:
        tile = data.source.tile("1")
        sar = tile.read("sar", 0, 16, 0, 16)
        assert np.isfinite(sar).all() and sar.std(axis=(1, 2)).min() > 0.1  # not a constant
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["cities"]["augsburg"]["nonfinite_repaired"]["sar"] == 4 + 2


def test_integer_nodata_is_missing_too(tmp_path, capsys):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    msi = np.full((4, 16, 16), 1000, np.uint16)
    msi[:, :2, :2] = 0
    write_gdal(root / "test" / "msi" / "1.tiff", msi, nodata=0)
    with open_tiles(tmp_path, AB) as tiles:
        raster = tiles.splits["test"].read_raster("msi", "1")
        assert raster.nodata_pixels == 16 and np.isnan(raster.data).sum() == 16
        assert raster.file_dtype == np.uint16 and raster.data.dtype == np.float32
    code, out, _ = run(capsys, "info", tmp_path, "--track", "AB", "--quiet", "--json")
    msi_info = json.loads(out)["test"]["modalities"]["msi"]
    assert msi_info["nodata_pixels"] == 16 and msi_info["dtype"] == "uint16"


EXTREMES = {(0, 0, 0): 3e38, (0, 1, 1): -3e38}  # no nodata declared: values, however absurd


def test_extreme_values_never_make_nan_samples(tmp_path, capsys):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    _sar_with(root, EXTREMES)
    code, out, err = run(capsys, "prepare", tmp_path, "--track", "AB", "--out", tmp_path / "p", "--quiet",
                         "--pca-components", "3")
    assert code == 0, err
    with PreparedData(tmp_path / "p") as data:
        for tile_id in data.source.ids:
            tile = data.source.tile(tile_id)
            h, w = tile.shape
            assert np.isfinite(tile.read("sar", 0, h, 0, w)).all()


def test_info_names_bands_whose_range_outliers_dominate(tmp_path, capsys):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    _sar_with(root, EXTREMES)
    code, out, _ = run(capsys, "info", tmp_path, "--track", "AB", "--quiet", "--json")
    assert code == 0 and json.loads(out)["train"]["modalities"]["sar"]["outlier_bands"] == [0]
    assert json.loads(out)["train"]["modalities"]["msi"]["outlier_bands"] == []
    code, out, _ = run(capsys, "info", tmp_path, "--track", "AB", "--quiet")
    assert "1 band(s) with a range dominated by a few outliers (band 1)" in out


def test_per_sample_minmax_of_extreme_values_is_finite(tmp_path):
    pytest.importorskip("torch")
    from c2seg_baseline.datasets import C2SegTiles

    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    _sar_with(root, EXTREMES)
    sar = C2SegTiles(tmp_path, "train", ["sar"], track="AB", normalise="minmax")[0]["image"].numpy()
    assert np.isfinite(sar).all() and sar.min() == 0 and sar.max() == 1


def test_nodata_in_the_datasets_is_repaired(tmp_path):
    pytest.importorskip("torch")
    from c2seg_baseline.datasets import C2SegTiles

    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    _sar_with(root, FOUR, nodata=F32_NODATA)
    sar = C2SegTiles(tmp_path, "train", ["sar"], track="AB", normalise="minmax")[0]["image"].numpy()
    assert np.isfinite(sar).all() and sar.std(axis=(1, 2)).min() > 0.1


def test_a_prepared_cache_with_a_non_finite_bound_is_refused(tmp_path):
    from c2seg_kit.prepare.cache import norm_params

    with pytest.raises(InvalidDataError, match=r"normalisation of band 2 is not finite"):
        norm_params([0.0, -np.inf], [1.0, 1.0])
    lo, scale = norm_params([-3.4e38], [3.4e38])  # a span beyond float32: a tiny scale, never 0
    assert np.isfinite(scale).all() and (scale > 0).all()


# ---- tile ids ------------------------------------------------------------------------------------

@pytest.mark.parametrize("odd", ["³", "①", "٣"])
def test_tile_ids_with_non_ascii_digits_are_one_line(tmp_path, capsys, odd):
    from c2seg_kit.submission.tile_writers import write_tile_submission

    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    for split, kinds in (("train", ("hsi", "msi", "sar", "label")), ("test", ("hsi", "msi", "sar"))):
        for m in kinds:
            (root / split / m / "1.tiff").rename(root / split / m / f"{odd}.tiff")
    packed = write_tile_submission(tmp_path / "s.h5", [("2", np.ones((16, 16), np.uint8))], "AB")
    for verb in (["info", tmp_path, "--track", "AB", "--quiet"],
                 ["prepare", tmp_path, "--track", "AB", "--out", tmp_path / "p", "--quiet"],
                 ["unpack", packed, "--like", tmp_path, "--out", tmp_path / "u", "--quiet"],
                 ["render", packed, "--like", tmp_path, "--out", tmp_path / "m.png"]):
        code, out, err = run(capsys, *verb)
        one_line(code, out, err, f"{odd}.tiff: tile id '{odd}'", "a digit that is not ASCII 0-9")
    assert natural_key(odd) == (1, 0, odd) and natural_key("17") == (0, 17, "17")


def test_prediction_images_and_uploads_with_such_ids_are_one_line(tmp_path, capsys):
    from PIL import Image

    from c2seg_kit.submission.tile_writers import write_tile_submission

    make_tiles(tmp_path / "C2Seg_AB")
    preds = tmp_path / "preds"
    preds.mkdir()
    for tile_id in ("1", "①"):
        Image.fromarray(np.ones((16, 16), np.uint8)).save(preds / f"{tile_id}.png")
    code, out, err = run(capsys, "pack", preds, "--track", "AB", "--out", tmp_path / "o.h5", "--quiet")
    one_line(code, out, err, "①.png: tile id '①'")
    # An upload holding such a member: named as such, not "HDF5 could not read its structure".
    path = write_tile_submission(tmp_path / "ok.h5", [("1", np.ones((2, 2), np.uint8))], "AB")
    import h5py

    with h5py.File(path, "a") as f:
        f["prediction"].create_dataset("³", data=np.ones((2, 2), np.uint8))
    code, out, err = run(capsys, "validate", path)
    one_line(code, out, err, "holds a member named '³', which is not a plain tile id")


def test_the_datasets_refuse_such_ids_in_one_line(tmp_path):
    pytest.importorskip("torch")
    from c2seg_baseline.datasets import C2SegTiles

    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    for m in ("hsi", "msi", "sar", "label"):
        (root / "train" / m / "2.tiff").rename(root / "train" / m / "①.tiff")
    with pytest.raises(InvalidDataError, match="tile id '①' holds the character '①'"):
        C2SegTiles(tmp_path, track="AB", split="train")


def test_a_nan_nodata_value_and_a_malformed_one(tmp_path, capsys):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    _sar_with(root, {(0, 3, 3): np.nan}, nodata=float("nan"))
    code, out, _ = run(capsys, "info", tmp_path, "--track", "AB", "--quiet", "--json")
    sar = json.loads(out, parse_constant=pytest.fail)["train"]["modalities"]["sar"]  # strict JSON: no NaN in it
    assert code == 0 and sar["nodata"] == [] and sar["nodata_pixels"] == 0 and sar["nan"] == 3
    tifffile.imwrite(root / "test" / "sar" / "2.tiff", np.zeros((16, 16, 2), np.float32), photometric="minisblack",
                     planarconfig="contig", extratags=[(42113, "s", 0, "minus nine", True)])
    code, out, err = run(capsys, "info", tmp_path, "--track", "AB", "--quiet")
    one_line(code, out, err, "test/sar/2.tiff: its GDAL nodata tag holds 'minus nine', not a number")
