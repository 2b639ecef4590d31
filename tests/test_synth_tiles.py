"""`c2seg synth --layout tiles`: the challenge's tile grid, files, values and hidden labels, checked
against a naive grid loop, the scene synth's cities, tifffile/rasterio and the tile reader."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest
import rasterio
import tifffile
from tile_support import zip_folder

from c2seg_kit.cli import main
from c2seg_kit.errors import C2SegError
from c2seg_kit.io.scene import open_city
from c2seg_kit.io.tiles import open_tiles
from c2seg_kit.registry import TRACKS
from c2seg_kit.synth.scenes import build_cities, city_shape, synthesize
from c2seg_kit.synth.tile_sets import (
    CITY_UTM,
    TILE_GRID,
    integer_reflectance,
    synthesize_tiles,
    tile_grid,
    tile_plan,
    write_city_tiles,
)

AB, BW = TRACKS["AB"], TRACKS["BW"]
SCALES = {"AB": 0.05, "BW": 0.01}
SEED = 3


def naive_starts(length: int, tile: int, stride: int) -> list[int]:
    """Oracle: step by the stride while a whole tile fits, then one tile flush with the edge."""
    starts, r = [], 0
    while r + tile < length:
        starts.append(r)
        r += stride
    starts.append(length - tile)
    return sorted(set(starts))


@pytest.fixture(scope="module", params=["AB", "BW"])
def made(request, tmp_path_factory):
    """Tiles and, from the same seed and scale, the scene synth's files: the oracle for every value."""
    track = TRACKS[request.param]
    out = tmp_path_factory.mktemp(f"tiles_{track.name}")
    written = synthesize_tiles(out / "tiles", track, scale=SCALES[track.name], seed=SEED, progress=False)
    synthesize(out / "scene", track, scale=SCALES[track.name], seed=SEED, progress=False)
    return track, out, written


def test_full_size_grid_reproduces_the_distributed_counts():
    counts = {}
    for track in (AB, BW):
        for city in track.cities:
            assert tile_grid(city, city.nominal_shape) == TILE_GRID[city.name]  # no shrinking at full size
            plan = tile_plan(city.nominal_shape, *TILE_GRID[city.name])
            counts[city.name] = len(plan)
            h, w = city.nominal_shape
            assert len(plan) == len(naive_starts(h, *TILE_GRID[city.name])) * len(naive_starts(w, *TILE_GRID[city.name]))
    assert counts == {"augsburg": 273, "berlin": 140, "beijing": 7140, "wuhan": 850}


def test_tiny_scales_keep_a_2x2_grid():
    for city in (*AB.cities, *BW.cities):
        for scale in (0.001, 0.01, 0.05):
            shape = city_shape(city, scale)
            tile, stride = tile_grid(city, shape)
            assert tile <= min(shape) // 2 and 1 <= stride <= tile
            assert len(naive_starts(shape[0], tile, stride)) >= 2 and len(naive_starts(shape[1], tile, stride)) >= 2


def test_layout_counts_and_overlapping_edges(made):
    track, out, written = made
    root = written["tiles"]
    assert root == out / "tiles" / track.tile_dir
    nested = "train/hsi/hsi" if track.name == "BW" else "train/hsi"
    expected_dirs = {nested, "train/msi", "train/sar", "train/label", "test/hsi", "test/msi", "test/sar"}
    tiff_dirs = {p.parent.relative_to(root).as_posix() for p in root.rglob("*.tiff")}
    assert tiff_dirs == expected_dirs
    assert sorted(p.name for p in (out / "tiles").iterdir()) == sorted(["labels.h5", track.tile_dir])  # no partial folder left
    for split, city in zip(("train", "test"), track.cities, strict=True):
        h, w = city_shape(city, SCALES[track.name])
        tile, stride = tile_grid(city, (h, w))
        rows, cols = naive_starts(h, tile, stride), naive_starts(w, tile, stride)
        ids = sorted((p.stem for p in (root / split / "msi").iterdir()), key=int)
        assert ids == [str(i) for i in range(len(rows) * len(cols))]  # 0-based, as distributed
        epsg, x0, y0 = CITY_UTM[city.name]
        for k, (r, c) in enumerate([(r, c) for r in rows for c in cols]):  # ids in row-major order
            with rasterio.open(root / split / "msi" / f"{k}.tiff") as src:
                assert src.shape == (tile, tile) and src.crs.to_epsg() == epsg
                assert (src.transform.c, src.transform.f) == (x0 + 10 * c, y0 - 10 * r)
                assert (src.transform.a, src.transform.e) == (10.0, -10.0)
        # the last column is snapped to the edge and overlaps its neighbour by the same pixels
        overlap = cols[-2] + tile - cols[-1]
        assert overlap > 0
        last, prev = len(cols) - 1, len(cols) - 2  # ids of the first row's last two tiles
        a = tifffile.imread(root / split / "sar" / f"{last}.tiff")
        b = tifffile.imread(root / split / "sar" / f"{prev}.tiff")
        np.testing.assert_array_equal(a[:, :overlap], b[:, -overlap:])


def test_values_equal_the_scene_synth_integer_scaled(made):
    """Each tile is the matching window of the scene synth's city (same seed), HSI/MSI x 10000 as
    int16/uint16, SAR float32 dB with its NaNs, label uint8; files pixel-interleaved."""
    track, out, written = made
    nan_seen = 0
    with open_tiles(written["tiles"], track) as tiles, h5py.File(written["labels"]) as labels:
        assert dict(labels.attrs) | {"created": ""} == {"c2seg_format": "labels/1", "track": track.name,
                                                         "layout": "tiles", "created": ""}
        for split, city in zip(("train", "test"), track.cities, strict=True):
            part = tiles.splits[split]
            assert part.has_label == (split == "train")
            if split == "test":
                assert sorted(labels["label"], key=int) == part.ids
            tile, stride = tile_grid(city, city_shape(city, SCALES[track.name]))
            origins = dict(zip(part.ids, [(r, c) for _, r, c in tile_plan(city_shape(city, SCALES[track.name]), tile, stride)],
                               strict=True))
            with open_city(out / "scene", track, city) as scene:
                for tid in part.ids:
                    r, c = origins[tid]
                    arrays, label = part.read_tile(tid)
                    ref = {m: scene.read(m, r, r + tile, c, c + tile).transpose(2, 0, 1) for m in ("hsi", "msi", "sar")}
                    assert arrays["hsi"].shape == (track.bands["hsi"], tile, tile)
                    np.testing.assert_array_equal(arrays["hsi"], integer_reflectance(ref["hsi"], np.dtype(np.int16)))
                    np.testing.assert_array_equal(arrays["msi"], integer_reflectance(ref["msi"], np.dtype(np.uint16)))
                    assert arrays["sar"].dtype == np.float32
                    np.testing.assert_array_equal(arrays["sar"], ref["sar"])  # NaN in the same places
                    nan_seen += int(np.isnan(arrays["sar"]).sum())
                    truth = scene.read_label(r, r + tile, c, c + tile)
                    if split == "train":
                        np.testing.assert_array_equal(label, truth)
                    else:  # the hidden labels: labels.h5, one dataset per test tile
                        ds = labels["label"][tid]
                        assert ds.dtype == np.uint8 and ds.shape == (tile, tile)
                        np.testing.assert_array_equal(ds[()], truth)
            for m, dtype in (("hsi", np.int16), ("msi", np.uint16), ("sar", np.float32)):
                with tifffile.TiffFile(written["tiles"] / part.path(m, part.ids[0])) as f:
                    assert f.series[0].axes == "YXS" and f.pages.first.planarconfig == 1
                    assert f.series[0].dtype == dtype
    assert nan_seen > 0
    msi_mean = float(np.mean(arrays["msi"]))
    assert 300 < msi_mean < 4000  # integer-scaled reflectance, as the sheet records (means ~500-3300)


def test_synth_refuses_to_overwrite(made):
    track, out, written = made
    before = written["labels"].read_bytes()
    with pytest.raises(C2SegError, match="already exists"):
        synthesize_tiles(out / "tiles", track, scale=SCALES[track.name], seed=SEED + 1, progress=False)
    assert written["labels"].read_bytes() == before


def test_failed_synth_leaves_nothing(tmp_path, monkeypatch):
    import c2seg_kit.synth.tile_sets as st

    calls = []

    def failing(path, data, georef=None):
        calls.append(path)
        if len(calls) > 30:
            raise OSError(28, "No space left on device")
        return real(path, data, georef)

    real = st.write_geotiff
    monkeypatch.setattr(st, "write_geotiff", failing)
    with pytest.raises(OSError):
        synthesize_tiles(tmp_path, AB, scale=0.05, seed=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_memory_holds_only_the_rows_open_tiles_need(tmp_path, monkeypatch):
    """Streaming: at most one tile's rows plus one generated band are held, however tall the city."""
    import c2seg_kit.synth.tile_sets as st

    track = dataclasses.replace(AB, bands={"hsi": 3, "msi": 4, "sar": 2})  # few HSI bands: fast
    gen = build_cities(track, 0.6, seed=0)[0]  # Augsburg 532 x 816: 9 bands of 64 rows
    held = []
    original = st.RowBuffer.push

    def push(self, r0, block):
        original(self, r0, block)
        held.append(sum(b.shape[0] for _, b in self.bands))

    monkeypatch.setattr(st.RowBuffer, "push", push)

    class Bar:
        def update(self, n):
            pass

    n = write_city_tiles(gen, tmp_path, "train", Bar())
    tile, stride = tile_grid(gen.city, gen.shape)
    assert tile == 128 and n == len(naive_starts(532, 128, 64)) * len(naive_starts(816, 128, 64))
    assert max(held) <= tile + 64 < gen.shape[0] / 2


def test_info_on_synth_tiles_and_their_zip(made, capsys, tmp_path):
    track, out, written = made
    root = written["tiles"]
    infos = []
    for target in (root.parent, zip_folder(root, tmp_path / f"{track.tile_dir}.zip")):
        with pytest.raises(SystemExit) as exc:
            main(["info", str(target), "--track", track.name, "--json", "--quiet"])
        captured = capsys.readouterr()
        assert exc.value.code == 0, captured.err
        infos.append(json.loads(captured.out))
    folder, zipped = infos
    assert zipped.pop("archive")["match"] is False
    assert zipped == folder
    for split, city in zip(("train", "test"), track.cities, strict=True):
        entry = folder[split]
        files = sorted((root / split / "msi").iterdir())
        tile, _ = tile_grid(city, city_shape(city, SCALES[track.name]))
        assert entry["city"] == city.display and entry["tiles"] == len(files)
        assert entry["tile_sizes"] == {f"{tile}x{tile}": len(files)}
        assert entry["georef"] == {"tiles": len(files), "epsg": [CITY_UTM[city.name][0]], "pixel_size": [[10.0, 10.0]]}
        sar = np.stack([tifffile.imread(p) for p in sorted((root / split / "sar").iterdir())])
        assert entry["modalities"]["sar"]["nan"] == int(np.isnan(sar).sum())
        assert entry["modalities"]["sar"]["min"] == pytest.approx(float(np.nanmin(sar)))
        hsi_dir = root / ("train/hsi/hsi" if (track.name, split) == ("BW", "train") else f"{split}/hsi")
        assert entry["modalities"]["hsi"] | {"min": 0, "max": 0} == {
            "bands": track.bands["hsi"], "expected_bands": track.bands["hsi"], "dtype": "int16", "nan": 0, "inf": 0,
            "min": 0, "max": 0, "nodata": [], "nodata_pixels": 0, "outlier_bands": []}
        assert len(list(hsi_dir.iterdir())) == len(files)
        if split == "train":
            labels = np.stack([tifffile.imread(p) for p in sorted((root / "train" / "label").iterdir())])
            assert entry["label_histogram"] == np.bincount(labels.ravel(), minlength=14).tolist()
        else:
            assert entry["label_histogram"] is None


def test_synth_cli_tiles(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path), "--track", "AB", "--layout", "tiles", "--scale", "0.03", "--quiet"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    assert f"labels: {tmp_path / 'labels.h5'}" in out and (tmp_path / "C2Seg_AB" / "test" / "msi" / "1.tiff").is_file()
    with pytest.raises(SystemExit) as exc:  # a second run refuses, in one line
        main(["synth", str(tmp_path), "--track", "AB", "--layout", "tiles", "--scale", "0.03", "--quiet"])
    _, err = capsys.readouterr()
    assert exc.value.code == 1 and "already exists" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    assert "2 x 2 grid" in capsys.readouterr().out
