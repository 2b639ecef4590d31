"""The challenge tile reader against tiles written by GDAL (rasterio) and by tifffile, good and bad."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from tile_support import bad_tile_folder, make_tiles, write_gdal, write_planar

from c2seg_kit.errors import DatasetNotFoundError, InvalidDataError
from c2seg_kit.io.geotiff import GeoRef, read_geotiff, write_geotiff
from c2seg_kit.io.tiles import TileSplit, find_tile_root, open_tiles
from c2seg_kit.registry import TRACKS

AB, BW = TRACKS["AB"], TRACKS["BW"]


def assert_split_equals(split: TileSplit, written: dict, name: str) -> None:
    ids = sorted((tid for s, tid in written if s == name), key=int)
    assert split.ids == ids
    for tid in ids:
        arrays, label = split.read_tile(tid)
        ref = written[(name, tid)]
        for m in ("hsi", "msi", "sar"):
            assert arrays[m].dtype == ref[m].dtype
            np.testing.assert_array_equal(arrays[m], ref[m])  # (C, H, W), NaN where written
        if "label" in ref:
            np.testing.assert_array_equal(label, ref["label"])
        else:
            assert label is None


@pytest.mark.parametrize("writer", ["gdal", "planar"])
def test_reads_gdal_and_band_first_tiles(tmp_path, writer):
    """GDAL's default (pixel-interleaved) and band-first files read as the (C, H, W) arrays written,
    mixed tile sizes within a split included."""
    root = tmp_path / "C2Seg_AB"
    written = make_tiles(root, writer=write_gdal if writer == "gdal" else write_planar)
    with open_tiles(tmp_path, AB) as tiles:
        assert set(tiles.splits) == {"train", "test"}
        assert_split_equals(tiles.splits["train"], written, "train")
        assert_split_equals(tiles.splits["test"], written, "test")
        assert tiles.splits["train"].tile_shape("3") == (8, 12)
        raster = tiles.splits["train"].read_raster("msi", "1")
        assert raster.axes == ("YXS" if writer == "gdal" else "SYX")
    if writer == "gdal":  # the file really is pixel-interleaved: tifffile alone gives H x W x bands
        assert tifffile.imread(root / "train" / "msi" / "1.tiff").shape == (16, 16, 4)


def test_gdal_georeferencing_is_kept(tmp_path):
    path = tmp_path / "t.tif"
    write_gdal(path, np.zeros((4, 8, 8), np.uint16), epsg=32633, origin=(378000.0, 5831000.0), pixel=10.0)
    g = read_geotiff(path).georef
    assert g.epsg == 32633 and g.origin == (378000.0, 5831000.0) and g.pixel_size == (10.0, 10.0)
    moved = g.window(3, 5)
    assert moved.origin == (378050.0, 5830970.0) and moved.epsg == 32633


def test_no_georeferencing_is_fine(tmp_path):
    path = tmp_path / "t.tif"
    write_gdal(path, np.arange(64, dtype=np.uint8).reshape(8, 8), epsg=None)
    raster = read_geotiff(path)
    assert raster.georef is None and raster.data.shape == (1, 8, 8)  # a single-band image is (1, H, W)


def test_kit_writer_is_read_by_gdal_with_crs_and_transform(tmp_path):
    """The kit's GDAL-style writer: rasterio sees pixel interleave, the EPSG code and the transform."""
    import rasterio

    data = np.random.default_rng(0).integers(0, 3000, (5, 20, 30)).astype(np.uint16)
    georef = GeoRef.utm(32650, 425000.0, 4450000.0, 10.0, "WGS 84 / UTM zone 50N").window(2, 7)
    write_geotiff(tmp_path / "k.tiff", data, georef)
    with rasterio.open(tmp_path / "k.tiff") as src:
        assert src.crs.to_epsg() == 32650
        assert tuple(src.transform)[:6] == (10.0, 0.0, 425070.0, 0.0, -10.0, 4449980.0)
        assert src.interleaving.name == "pixel"
        np.testing.assert_array_equal(src.read(), data)
    back = read_geotiff(tmp_path / "k.tiff")
    assert back.axes == "YXS" and back.georef == georef
    np.testing.assert_array_equal(back.data, data)


def test_undecidable_layout_is_one_line_error(tmp_path):
    """A multi-page stack (tifffile's default for a 3-D minisblack array) does not say that pages are
    bands; GDAL itself reads only the first page. The reader refuses instead of guessing."""
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    tifffile.imwrite(root / "train" / "msi" / "2.tiff", np.zeros((4, 16, 16), np.uint16), photometric="minisblack")
    with open_tiles(tmp_path, AB) as tiles:
        with pytest.raises(InvalidDataError, match=r"2.tiff: cannot tell which axis holds the bands") as e:
            tiles.splits["train"].read_tile("2")
    assert "\n" not in str(e.value)


def test_nested_bw_layout(tmp_path):
    root = tmp_path / "C2Seg_BW"
    written = make_tiles(root, nested_hsi=True)
    assert find_tile_root(tmp_path, BW) == root
    with open_tiles(root, BW) as tiles:
        train = tiles.splits["train"]
        assert train.folders["hsi"] == "train/hsi/hsi" and train.folders["msi"] == "train/msi"
        assert_split_equals(train, written, "train")


def test_tif_and_tiff_mix(tmp_path):
    root = tmp_path / "C2Seg_AB"
    written = make_tiles(root)
    for p in (root / "train" / "sar").iterdir():
        p.rename(p.with_suffix(".TIF"))
    (root / "train" / "msi" / "2.tiff").rename(root / "train" / "msi" / "2.tif")
    with open_tiles(root, AB) as tiles:
        assert_split_equals(tiles.splits["train"], written, "train")


def test_duplicate_ids_are_an_error(tmp_path):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    write_gdal(root / "train" / "msi" / "1.tif", np.zeros((4, 16, 16), np.uint16))
    with pytest.raises(InvalidDataError, match=r"msi: tile 1 appears twice \(1.tif, 1.tiff\)"):
        open_tiles(root, AB)


@pytest.mark.parametrize(("removed", "message"), [
    ("test/hsi/2.tiff", "test: tile 2 has msi and sar but no hsi tile"),  # a modality missing for an id
    ("train/label/3.tiff", "tile 3 has hsi and msi and sar but no label tile"),  # a label missing for an id
])
def test_missing_tile_for_an_id(tmp_path, removed, message):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    (root / removed).unlink()
    with pytest.raises(InvalidDataError, match=message):
        open_tiles(root, AB)


def test_missing_modality_folder(tmp_path):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    for p in (root / "test" / "sar").iterdir():
        p.unlink()
    (root / "test" / "sar").rmdir()
    with pytest.raises(DatasetNotFoundError, match="expected sar tiles in .*test/sar"):
        open_tiles(root, AB)


def test_modalities_disagree_in_size(tmp_path):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    write_gdal(root / "train" / "sar" / "2.tiff", np.zeros((2, 16, 12), np.float32))
    with open_tiles(root, AB) as tiles:
        with pytest.raises(InvalidDataError, match=r"tile 2 \(train\): modalities disagree in size "
                                                   r"\(HSI 16x16, MSI 16x16, SAR 16x12, label 16x16\)"):
            tiles.splits["train"].read_tile("2")


def test_label_values_over_13(tmp_path):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    label = np.ones((16, 16), np.uint8)
    label[0, :2] = [14, 255]
    write_gdal(root / "train" / "label" / "1.tiff", label)
    with open_tiles(root, AB) as tiles:
        with pytest.raises(InvalidDataError, match=r"label/1.tiff has 2 values outside 0..13 \(seen: 14, 255\)"):
            tiles.splits["train"].read("label", "1")


def test_multiband_label_is_refused(tmp_path):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    write_gdal(root / "train" / "label" / "1.tiff", np.ones((2, 16, 16), np.uint8))
    with open_tiles(root, AB) as tiles:
        with pytest.raises(InvalidDataError, match="label tile has 2 bands"):
            tiles.splits["train"].read("label", "1")


def test_not_a_tiff(tmp_path):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root)
    (root / "train" / "hsi" / "1.tiff").write_bytes(b"II*\0garbage")
    with open_tiles(root, AB) as tiles:
        with pytest.raises(InvalidDataError, match="hsi/1.tiff is not a readable GeoTIFF"):
            tiles.splits["train"].read("hsi", "1")


def test_natural_id_order_and_hidden_files_ignored(tmp_path):
    root = tmp_path / "C2Seg_AB"
    make_tiles(root, sizes={"train": [(8, 8)] * 11})
    for m in ("hsi", "msi", "sar", "label"):
        (root / "train" / m / "._1.tiff").write_bytes(b"AppleDouble")  # macOS resource forks
    with open_tiles(root, AB) as tiles:
        assert tiles.splits["train"].ids == [str(i) for i in range(1, 12)]
        assert "test" not in tiles.splits


def test_no_tiles_names_expectation(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="expected C2Seg_AB/train/msi"):
        open_tiles(tmp_path, AB)


def test_lzw_tiles_need_imagecodecs(tmp_path):
    """GDAL's LZW compression: read when imagecodecs is installed, else one line saying what to install."""
    import importlib.util

    import rasterio

    data = np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)
    with rasterio.open(tmp_path / "c.tif", "w", driver="GTiff", height=8, width=8, count=4, dtype="uint16",
                       compress="lzw") as dst:
        dst.write(data)
    if importlib.util.find_spec("imagecodecs") is not None:
        np.testing.assert_array_equal(read_geotiff(tmp_path / "c.tif").data, data)
    else:
        with pytest.raises(InvalidDataError, match=r"c.tif: compressed with LZW, which needs the imagecodecs package \(pip install imagecodecs\)$"):
            read_geotiff(tmp_path / "c.tif")


@pytest.mark.parametrize("kind,message", [
    ("sizes", "tile 2 (train): modalities disagree in size"),
    ("missing", "tile 1 has hsi and sar and label but no msi tile"),
    ("label", "has 96 values outside 0..13 (seen: 20)"),
    ("layout", "cannot tell which axis holds the bands"),
    ("bands", "test: hsi tiles disagree in band count (6 in tile 1, 3 in tile 2)"),
    ("msi bands", "test/msi/2.tiff: MSI tile of 3 bands; track AB's MSI tiles have 4"),
])
def test_info_on_bad_tiles_is_one_line(tmp_path, capsys, kind, message):
    from c2seg_kit.cli import main

    bad_tile_folder(tmp_path, kind)
    with pytest.raises(SystemExit) as exc:
        main(["info", str(tmp_path), "--track", "AB", "--quiet"])
    out, err = capsys.readouterr()
    assert exc.value.code == 1 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""


def test_info_finds_the_zip_in_the_download_folder(tmp_path, capsys):
    from tile_support import zip_folder

    from c2seg_kit.cli import main

    make_tiles(tmp_path / "src" / "C2Seg_AB")
    (tmp_path / "downloads").mkdir()
    zip_folder(tmp_path / "src" / "C2Seg_AB", tmp_path / "downloads" / "C2Seg_AB.zip")
    with pytest.raises(SystemExit) as exc:
        main(["info", str(tmp_path / "downloads"), "--track", "AB", "--quiet"])
    out, _ = capsys.readouterr()
    assert exc.value.code == 0 and "archive " in out and "train: Augsburg (source, tiles): 3 tiles (2 of 16x16, 1 of 8x12)" in out


def test_model_transformation_georeferencing(tmp_path):
    """Some writers state the north-up transform as ModelTransformationTag instead of tie point + scale."""
    matrix = (20.0, 0.0, 0.0, 500000.0, 0.0, -20.0, 0.0, 4000000.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((8, 8), np.uint8), extratags=[(34264, "d", 16, matrix, True)])
    g = read_geotiff(tmp_path / "m.tif").georef
    assert g.origin == (500000.0, 4000000.0) and g.pixel_size == (20.0, 20.0) and g.epsg is None


def test_hostile_tiff_headers_are_refused_before_pixels(tmp_path):
    tifffile.imwrite(tmp_path / "wide.tif", np.zeros((1, 20000), np.uint8))  # 20 KB, but wider than any tile
    with pytest.raises(InvalidDataError, match="wide.tif: tile of 1x20000 pixels.*over the size caps"):
        read_geotiff(tmp_path / "wide.tif", header_only=True)
    tifffile.imwrite(tmp_path / "keys.tif", np.zeros((4, 4), np.uint8),
                     extratags=[(34735, "H", 5000, tuple(range(5000)), True)])
    with pytest.raises(InvalidDataError, match="keys.tif: GeoTIFF tag 34735 holds 5000 values"):
        read_geotiff(tmp_path / "keys.tif")
