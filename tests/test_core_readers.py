"""Scene and tile readers against files written independently here (scipy.io, raw h5py, tifffile)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io
from scene_support import write_bw_city

from c2seg_kit.errors import DatasetNotFoundError, InvalidDataError
from c2seg_kit.io.scene import MatV5Scene, MatV73Scene, open_city
from c2seg_kit.io.tiles import TileSplit, find_tile_root
from c2seg_kit.registry import TRACKS

AB, BW = TRACKS["AB"], TRACKS["BW"]


def ab_arrays(h=20, w=30, hsi_bands=244, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "HSI": rng.random((h, w, hsi_bands)).astype(np.float32),
        "MSI": rng.random((h, w, 4)).astype(np.float32),
        "SAR": (rng.normal(size=(h, w, 2)) * 10 - 15).astype(np.float32),
        "label": rng.integers(0, 14, (h, w)).astype(np.uint8),
    }


def write_ab(folder, arrays, city=AB.source):
    scipy.io.savemat(folder / city.scene_file, arrays)


def test_v5_reader_matches_savemat(tmp_path):
    arrays = ab_arrays()
    write_ab(tmp_path, arrays)
    with open_city(tmp_path, AB, AB.source) as scene:
        assert isinstance(scene, MatV5Scene)
        assert scene.shape == (20, 30)
        assert scene.bands == {"hsi": 242, "msi": 4, "sar": 2}  # the first 242 bands kept, as the reference
        np.testing.assert_array_equal(scene.read("hsi", 3, 9, 5, 17), arrays["HSI"][3:9, 5:17, :242])
        np.testing.assert_array_equal(scene.read("sar", 0, 20, 0, 30), arrays["SAR"])
        np.testing.assert_array_equal(scene.read_label(2, 4, 0, 30), arrays["label"][2:4])


@pytest.mark.parametrize("h,w,extra", [(30, 27, (0, 0)), (31, 29, (0, 0)), (32, 28, (0, 0)),
                                       (32, 27, (0, 1)), (30, 27, (1, 1))])  # Beijing: 8706 px, 2903 cells
def test_v73_reader_reverses_axes_and_upsamples_hsi(tmp_path, h, w, extra):
    ref = write_bw_city(tmp_path, BW.source, h, w, extra_cells=extra)
    with open_city(tmp_path, BW, BW.source) as scene:
        assert isinstance(scene, MatV73Scene)
        assert scene.shape == (h, w) and scene.factor == 3
        np.testing.assert_array_equal(scene.read("msi", 0, h, 0, w), ref["msi"])
        np.testing.assert_array_equal(scene.read_label(0, h, 0, w), ref["label"])
        # naive oracle: nearest 3x upsampling of the 30 m grid, cropped to the 10 m grid
        up = np.repeat(np.repeat(ref["hsi"], 3, axis=0), 3, axis=1)[:h, :w]
        np.testing.assert_array_equal(scene.read("hsi", 0, h, 0, w), up)
        for r0, r1, c0, c1 in [(1, 8, 2, 5), (4, 5, 7, 8), (h - 4, h, w - 5, w)]:
            np.testing.assert_array_equal(scene.read("hsi", r0, r1, c0, c1), up[r0:r1, c0:c1])


def test_tiles_reader(tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    root = tmp_path / "C2Seg_AB"
    tiles = {}
    for split in ("train", "test"):
        for tid in ("0001", "0002"):
            arrays = {"hsi": rng.random((242, 16, 16)).astype(np.float32),
                      "msi": rng.random((4, 16, 16)).astype(np.float32),
                      "sar": rng.random((2, 16, 16)).astype(np.float32)}
            if split == "train":
                arrays["label"] = rng.integers(0, 14, (16, 16)).astype(np.uint8)
            for m, a in arrays.items():
                (root / split / m).mkdir(parents=True, exist_ok=True)
                # band-first (PlanarConfiguration 2); GDAL's pixel-interleaved tiles: test_tiles_reader.py
                tifffile.imwrite(root / split / m / f"{tid}.tiff", a, photometric="minisblack",
                                 planarconfig="separate" if a.ndim == 3 else None)
            tiles[(split, tid)] = arrays
    assert find_tile_root(tmp_path, AB) == root
    train = TileSplit(root, "train")
    assert train.ids == ["0001", "0002"] and train.has_label
    arrays, label = train.read_tile("0002")
    np.testing.assert_array_equal(arrays["hsi"], tiles[("train", "0002")]["hsi"])
    np.testing.assert_array_equal(label, tiles[("train", "0002")]["label"])
    assert not TileSplit(root, "test").has_label


# --- bad input: each problem is a one-line C2SegError that names what is wrong ---

def test_missing_scene_file_names_expectation(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="augsburg_multimodal.mat"):
        open_city(tmp_path, AB, AB.source)


def test_wrong_variable_names(tmp_path):
    arrays = ab_arrays()
    arrays["hyperspectral"] = arrays.pop("HSI")
    write_ab(tmp_path, arrays)
    with pytest.raises(InvalidDataError, match="missing variable.*HSI.*found.*hyperspectral"):
        open_city(tmp_path, AB, AB.source)


def test_disagreeing_shapes(tmp_path):
    arrays = ab_arrays()
    arrays["SAR"] = arrays["SAR"][:15]
    write_ab(tmp_path, arrays)
    with pytest.raises(InvalidDataError, match="disagree in shape"):
        open_city(tmp_path, AB, AB.source)


def test_label_outside_range(tmp_path):
    arrays = ab_arrays()
    arrays["label"][0, :3] = [14, 200, 14]
    write_ab(tmp_path, arrays)
    with open_city(tmp_path, AB, AB.source) as scene:
        with pytest.raises(InvalidDataError, match=r"^augsburg label has 3 values outside 0..13 \(seen: 14, 200\)$"):
            scene.read_label(0, 20, 0, 30)


@pytest.mark.parametrize("content", [b"", b"MATLAB 5.0 MAT-file" + b"\0" * 50, b"\x89HDF\r\n\x1a\n" + b"\0" * 40])
def test_empty_or_truncated_file(tmp_path, content):
    (tmp_path / AB.source.scene_file).write_bytes(content)
    with pytest.raises(InvalidDataError):
        open_city(tmp_path, AB, AB.source)


def test_truncated_v73_file(tmp_path):
    write_bw_city(tmp_path, BW.source, 30, 27)
    path = tmp_path / BW.source.scene_file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InvalidDataError):
        scene = open_city(tmp_path, BW, BW.source)
        scene.read("msi", 0, 30, 0, 27)  # some truncations surface only when data is read


def test_v73_hsi_grid_mismatch(tmp_path):
    write_bw_city(tmp_path, BW.source, 30, 27)
    with h5py.File(tmp_path / BW.source.scene_file, "a") as f:
        del f["HSI"]
        f["HSI"] = np.zeros((116, 4, 4), np.float32)
    with pytest.raises(InvalidDataError, match="HSI grid"):
        open_city(tmp_path, BW, BW.source)
