"""`c2seg prepare` on challenge tiles: the tile cache, its statistics, bad input, --out."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
from city_tiles import city_oracle, make_city_tiles
from cli_support import run_cli as run
from tile_support import HOSTILE, bad_tile_folder, evil_zip, zip_folder

from c2seg_kit.errors import C2SegError
from c2seg_kit.io.tiles import open_tiles
from c2seg_kit.prepare.cache import PreparedData, PreparedTile, PreparedTiles
from c2seg_kit.prepare.pipeline import PrepareOptions, prepare
from c2seg_kit.registry import TRACKS

AB, BW = TRACKS["AB"], TRACKS["BW"]
CITY = {"train": "augsburg", "test": "berlin"}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """A C2Seg_AB folder, its zip as distributed, and what the tiles hold."""
    base = tmp_path_factory.mktemp("tiles")
    written = make_city_tiles(base / "src" / "C2Seg_AB")
    (base / "dist").mkdir()
    return base / "src", zip_folder(base / "src" / "C2Seg_AB", base / "dist" / "C2Seg_AB.zip"), written


@pytest.fixture(scope="module")
def prepared(tiles, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiles_prep") / "prep"
    return prepare(tiles[0], AB, out, progress=False), out


def h5_contents(path):
    """Every dataset and attribute of an HDF5 file, for exact comparison."""
    items = {}

    def visit(name, obj):
        items[name] = obj[()] if isinstance(obj, h5py.Dataset) else None
        for k, v in obj.attrs.items():
            items[f"{name}@{k}"] = v

    with h5py.File(path) as f:
        for k, v in f.attrs.items():
            items[f"@{k}"] = v
        f.visititems(visit)
    return items


def test_folder_and_zip_give_identical_caches(tiles, prepared, tmp_path):
    prepare(tiles[1], AB, tmp_path / "z", progress=False)
    for name in CITY.values():
        a, b = h5_contents(prepared[1] / f"{name}.h5"), h5_contents(tmp_path / "z" / f"{name}.h5")
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert json.loads((tmp_path / "z" / "manifest.json").read_text()) == prepared[0]


@pytest.mark.parametrize("split", ["train", "test"])
def test_per_city_statistics_equal_an_oracle_over_all_tiles(tiles, prepared, split):
    written = tiles[2]
    oracle = city_oracle(written, split)
    with PreparedData(prepared[1]) as data:
        city = data.city(CITY[split])
        assert isinstance(city, PreparedTiles) and data.layout == "tiles" and city.layout == "tiles"
        assert city.ids == oracle["ids"] and city.ids[-1] == str(len(city.ids) - 1)  # natural order: "10" last
        assert city.channels == {"hsi": 10, "msi": 4, "sar": 2}
        with h5py.File(prepared[1] / f"{CITY[split]}.h5") as f:
            np.testing.assert_allclose(f["pca_components"][()].T, oracle["components"], atol=1e-8)
        for tile_id, tile in city.rasters():
            h, w = tile.shape
            assert (h, w) == written[(split, tile_id)]["msi"].shape[1:]
            for m in ("hsi", "msi", "sar"):
                x = tile.read(m, 0, h, 0, w)
                assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
                np.testing.assert_allclose(x, oracle[m][tile_id], atol=2e-6, err_msg=f"{m} tile {tile_id}")
            window = tile.read("msi", 2, 7, 3, 9)
            np.testing.assert_array_equal(window, tile.read("msi", 0, h, 0, w)[:, 2:7, 3:9])


def test_labels_georef_and_report_per_tile(tiles, prepared):
    manifest, out = prepared
    written = tiles[2]
    with PreparedData(out) as data, open_tiles(tiles[0], AB) as raw:
        assert data.source.has_label and not data.target.has_label
        for split, city in (("train", data.source), ("test", data.target)):
            for tile_id, tile in city.rasters():
                h, w = tile.shape
                expected = written[(split, tile_id)].get("label", np.zeros((h, w), np.uint8))
                np.testing.assert_array_equal(tile.read_label(0, h, 0, w), expected)
                georef = city.georef(tile_id)
                assert georef is not None and georef == raw.splits[split].georef(tile_id)
                assert tile.georef() == georef
    report = manifest["cities"]["augsburg"]
    assert report["tiles"] == 11 and report["tile_sizes"] == {"12x12": 10, "8x12": 1}
    nans = sum(int(np.isnan(a["sar"]).sum()) for (s, _), a in written.items() if s == "train")
    assert report["nonfinite_repaired"] == {"hsi": 0, "msi": 0, "sar": nans}
    assert report["pca_fit_pixels"] == 10 * 144 + 96
    assert manifest["layout"] == "tiles"


def test_prepared_tile_pickles_and_reads_the_same(prepared):
    with PreparedData(prepared[1]) as data:
        tile = data.source.tile("3")
        h, w = tile.shape
        before = tile.read("hsi", 0, h, 0, w)
        copy = pickle.loads(pickle.dumps(tile))
        assert isinstance(copy, PreparedTile) and copy.tile_id == "3"
        np.testing.assert_array_equal(copy.read("hsi", 0, h, 0, w), before)
        with pytest.raises(KeyError):
            data.source.tile("99")


def test_raw_transform_equals_the_cache(tiles, prepared):
    with PreparedData(prepared[1]) as data, open_tiles(tiles[1], AB) as raw:
        transform = data.target.transform()
        for tile_id in raw.splits["test"].ids:
            arrays, _ = raw.splits["test"].read_tile(tile_id)
            got = transform(arrays)
            tile = data.target.tile(tile_id)
            h, w = tile.shape
            for m in ("hsi", "msi", "sar"):
                np.testing.assert_array_equal(got[m], tile.read(m, 0, h, 0, w))


def test_percentiles_over_all_tiles(tiles, tmp_path):
    """With a sample as large as the city, the percentiles are exact: compare with numpy over all tiles."""
    prepare(tiles[0], AB, tmp_path / "p", PrepareOptions(normalisation="percentile", percentiles=(5, 95),
                                                         sample_pixels=10_000), progress=False)
    oracle = city_oracle(tiles[2], "train")
    values = np.concatenate([a.reshape(2, -1) for a in oracle["raw"]["sar"].values()], axis=1)
    lo, hi = np.percentile(values, (5, 95), axis=1)
    with h5py.File(tmp_path / "p" / "augsburg.h5") as f:
        np.testing.assert_allclose(f.attrs["norm_lo_sar"], lo, rtol=1e-6)
        np.testing.assert_allclose(f.attrs["norm_hi_sar"], hi, rtol=1e-6)
        assert f.attrs["normalisation"] == "percentile"
    # HSI: percentiles of the authors' channels (signs turned before the percentiles are taken)
    hsi = oracle["raw"]["hsi"]
    lo, hi = np.percentile(np.concatenate([a.reshape(10, -1) for a in hsi.values()], axis=1), (5, 95), axis=1)
    with PreparedData(tmp_path / "p") as data:
        for tile_id, tile in data.source.rasters():
            h, w = tile.shape
            expected = np.clip((hsi[tile_id] - lo[:, None, None]) / (hi - lo)[:, None, None], 0, 1)
            np.testing.assert_allclose(tile.read("hsi", 0, h, 0, w), expected, atol=1e-5)


def test_source_fit_on_tiles(tiles, tmp_path):
    prepare(tiles[0], AB, tmp_path / "p", PrepareOptions(pca_fit="source"), progress=False)
    oracle = city_oracle(tiles[2], "train")
    with h5py.File(tmp_path / "p" / "berlin.h5") as f:
        np.testing.assert_allclose(f["pca_components"][()].T, oracle["components"], atol=1e-8)


def test_bw_nested_layout_and_cli_report(tmp_path, capsys):
    make_city_tiles(tmp_path / "C2Seg_BW", nested_hsi=True)
    code, out, err = run(capsys, "prepare", tmp_path, "--track", "BW", "--out", tmp_path / "p", "--quiet")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("beijing: 11 tiles (10 of 12x12, 1 of 8x12), non-finite repaired: HSI 0, MSI 0, SAR ")
    assert lines[0].endswith("labels: yes")
    assert lines[-2].startswith("wuhan: 4 tiles (3 of 12x12, 1 of 12x8)") and lines[-2].endswith("labels: no")
    assert lines[-1] == f"prepared cache (tiles): {tmp_path / 'p'}"
    with PreparedData(tmp_path / "p") as data:
        assert data.track.name == "BW" and len(data.source.ids) == 11


BAD = {
    "sizes": "tile 2 (train): modalities disagree in size",
    "missing": "tile 1 has hsi and sar and label but no msi tile",
    "label": "has 96 values outside 0..13 (seen: 20)",
    "bands": "test: hsi tiles disagree in band count (6 in tile 1, 3 in tile 2)",
    "msi bands": "test/msi/2.tiff: MSI tile of 3 bands; track AB's MSI tiles have 4",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_tiles_are_one_line_and_nothing_is_written(tmp_path, capsys, kind):
    bad_tile_folder(tmp_path / "data", kind)
    code, out, err = run(capsys, "prepare", tmp_path / "data", "--track", "AB", "--out", tmp_path / "p",
                         "--quiet", "--pca-components", "3")
    assert code == 1 and BAD[kind] in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "p").exists()


def test_escaping_zip_is_refused_before_anything_is_written(tmp_path, capsys):
    entries, message = HOSTILE["escaping"]
    path = evil_zip(tmp_path / "C2Seg_AB.zip", entries)
    (tmp_path / "p").mkdir()
    code, _, err = run(capsys, "prepare", path, "--track", "AB", "--out", tmp_path / "p", "--quiet")
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert list((tmp_path / "p").iterdir()) == []


def test_missing_split_is_one_line(tmp_path, capsys):
    make_city_tiles(tmp_path / "C2Seg_AB", sizes={"train": [(12, 12)] * 3})
    code, _, err = run(capsys, "prepare", tmp_path, "--track", "AB", "--out", tmp_path / "p", "--quiet")
    assert code == 1 and "no test split in" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()


def test_source_fit_needs_equal_hsi_bands(tmp_path, capsys):
    root = tmp_path / "C2Seg_AB"
    written = make_city_tiles(root)
    from tile_support import write_gdal

    for (split, tile_id), arrays in written.items():
        if split == "test":
            write_gdal(root / "test" / "hsi" / f"{tile_id}.tiff", arrays["hsi"][:20])
    code, _, err = run(capsys, "prepare", tmp_path, "--track", "AB", "--out", tmp_path / "p", "--quiet",
                       "--pca-fit", "source")
    assert code == 1 and "tile 0 has 20 HSI bands, the PCA was fitted on 24" in err
    assert not (tmp_path / "p").exists()


# --- --out: new, empty, or (with --force) a previous prepare output; nothing else ---

def test_out_with_a_users_files_is_refused(synth_ab, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "berlin.h5").write_bytes(b"my own work")
    code, _, err = run(capsys, "prepare", synth_ab, "--track", "AB", "--out", out, "--quiet")
    assert code == 1 and "is not empty and was not written by `c2seg prepare`" in err and len(err.strip().splitlines()) == 1
    assert (out / "berlin.h5").read_bytes() == b"my own work" and sorted(p.name for p in out.iterdir()) == ["berlin.h5"]
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "prepare", synth_ab, "--track", "AB", "--out", tmp_path / "file", "--quiet")
    assert code == 2 and "is a file" in err and (tmp_path / "file").read_text() == "x"  # click's usage check
    with pytest.raises(C2SegError, match="exists and is not a folder; prepare writes into a new or empty folder"):
        prepare(synth_ab, AB, tmp_path / "file", progress=False)
    assert (tmp_path / "file").read_text() == "x"


def test_previous_output_is_replaced_and_kept_when_a_rerun_fails(tiles, tmp_path, capsys):
    data = tmp_path / "data"
    make_city_tiles(data / "C2Seg_AB")
    out = tmp_path / "p"
    out.mkdir()  # an empty folder is fine
    assert run(capsys, "prepare", data, "--track", "AB", "--out", out, "--quiet")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # a prepared cache is replaced only with --force
    code, _, err = run(capsys, "prepare", data, "--track", "AB", "--out", out, "--quiet", "--pca-components", "4")
    assert code == 1 and err.count("\n") == 1 and "manifest.json already exists; it was left as it is" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert run(capsys, "prepare", data, "--track", "AB", "--out", out, "--quiet", "--pca-components", "4",
               "--force")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # replaced in place, no leftovers
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with PreparedData(out) as prepared:
        assert prepared.source.channels["hsi"] == 4
    bad_tile_folder(tmp_path / "bad", "label")
    code, _, err = run(capsys, "prepare", tmp_path / "bad", "--track", "AB", "--out", out, "--quiet",
                       "--pca-components", "3", "--force")
    assert code == 1 and "values outside 0..13" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched by the failed run
    with PreparedData(out) as prepared:  # the previous cache is whole and readable
        assert len(prepared.source.ids) == 11
