"""prepare: repair, PCA, normalisation, determinism; tiling and the windowed Dataset."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from c2seg_kit.io.scene import open_city
from c2seg_kit.prepare.cache import PreparedData
from c2seg_kit.prepare.pipeline import PCA, PrepareOptions, prepare, repair_nonfinite
from c2seg_kit.registry import TRACKS
from c2seg_kit.tiling import axis_starts, window_origins


@pytest.mark.parametrize("h,w,win,stride", [(10, 10, 4, 2), (9, 13, 4, 3), (5, 3, 8, 4), (128, 300, 128, 64), (7, 7, 7, 7)])
def test_windows_cover_every_pixel(h, w, win, stride):
    covered = np.zeros((h, w), dtype=int)
    for r0, c0 in window_origins(h, w, win, stride):
        assert r0 >= 0 and c0 >= 0
        assert r0 + win <= max(h, win) and c0 + win <= max(w, win)  # never past the edge
        covered[r0 : r0 + win, c0 : c0 + win] += 1
    assert covered.min() >= 1
    # naive oracle for the starts: step by stride, then one window snapped to the edge
    naive = []
    r = 0
    while True:
        naive.append(min(r, max(h - win, 0)))
        if r + win >= h:
            break
        r += stride
    assert axis_starts(h, win, stride) == sorted(set(naive))


def test_tiling_rejects_gaps():
    with pytest.raises(ValueError, match="gaps"):
        window_origins(10, 10, 4, 5)


def test_repair_uses_four_neighbour_mean():
    block = np.arange(5 * 5 * 2, dtype=np.float32).reshape(5, 5, 2)
    expected = (block[1, 2, 1] + block[3, 2, 1] + block[2, 1, 1] + block[2, 3, 1]) / 4
    block[2, 2, 1] = np.nan
    block[0, 0, 0] = np.inf
    corner = (block[0, 1, 0] + block[1, 0, 0]) / 2
    assert repair_nonfinite(block) == 2
    assert block[2, 2, 1] == pytest.approx(expected)
    assert block[0, 0, 0] == pytest.approx(corner)
    assert np.isfinite(block).all()


def test_pca_matches_sklearn():
    from sklearn.decomposition import PCA as SkPCA

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 12)) @ rng.normal(size=(12, 12))
    ours = PCA.from_sums(len(x), x.sum(0), x.T @ x, 4)
    sk = SkPCA(n_components=4).fit(x)
    np.testing.assert_allclose(ours.explained_variance_ratio, sk.explained_variance_ratio_, rtol=1e-6)
    # components agree up to sign
    np.testing.assert_allclose(np.abs(ours.components.T @ sk.components_.T), np.eye(4), atol=1e-6)


def test_prepare_output_and_report(synth_bw, prepared_bw):
    manifest = json.loads((prepared_bw / "manifest.json").read_text())
    assert manifest["track"] == "BW" and manifest["source"] == "beijing"
    with PreparedData(prepared_bw) as data:
        for city in (data.source, data.target):
            assert city.channels == {"hsi": 10, "msi": 4, "sar": 2}
            h, w = city.shape
            for m in ("hsi", "msi", "sar"):
                x = city.read(m, 0, h, 0, w)
                assert x.dtype == np.float32 and np.isfinite(x).all()
                # per-band min-max: every band spans exactly [0, 1]
                np.testing.assert_allclose(x.min(axis=(1, 2)), 0, atol=1e-6)
                np.testing.assert_allclose(x.max(axis=(1, 2)), 1, atol=1e-6)
            # the synthetic SAR has NaN pixels, counted exactly and repaired
            with open_city(synth_bw, TRACKS["BW"], TRACKS["BW"].city(city.name)) as scene:
                nans = int(np.isnan(scene.read("sar", 0, h, 0, w)).sum())
                np.testing.assert_array_equal(city.read_label(0, h, 0, w), scene.read_label(0, h, 0, w))
            assert nans > 0
            assert manifest["cities"][city.name]["nonfinite_repaired"]["sar"] == nans


def test_prepared_msi_equals_minmax_of_raw(synth_ab, prepared_ab):
    """Normalised MSI = (raw - band min) / (band max - band min), computed naively here."""
    with open_city(synth_ab, TRACKS["AB"], TRACKS["AB"].target) as scene, PreparedData(prepared_ab) as data:
        h, w = scene.shape
        raw = scene.read("msi", 0, h, 0, w).astype(np.float64)
        lo, hi = raw.min(axis=(0, 1)), raw.max(axis=(0, 1))
        expected = ((raw - lo) / (hi - lo)).transpose(2, 0, 1)
        np.testing.assert_allclose(data.target.read("msi", 0, h, 0, w), expected, atol=1e-5)


def test_prepare_is_deterministic_and_band_size_independent(synth_bw, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    prepare(synth_bw, TRACKS["BW"], a, PrepareOptions(seed=3), progress=False)
    prepare(synth_bw, TRACKS["BW"], b, PrepareOptions(seed=3, band_rows=33), progress=False)
    for name in ("beijing", "wuhan"):
        with h5py.File(a / f"{name}.h5") as fa, h5py.File(b / f"{name}.h5") as fb:
            for key in ("hsi", "msi", "sar", "label"):
                np.testing.assert_array_equal(fa[key][()], fb[key][()])
                for attr in ("norm_lo", "norm_hi") if key != "label" else ():
                    np.testing.assert_array_equal(fa[key].attrs[attr], fb[key].attrs[attr])


def test_prepare_options_pca_source_and_percentile(synth_ab, tmp_path):
    manifest = prepare(synth_ab, TRACKS["AB"], tmp_path, PrepareOptions(pca_fit="source", normalisation="percentile",
                                                                        percentiles=(2, 98)), progress=False)
    cities = manifest["cities"]
    assert cities["augsburg"]["pca_explained_variance"] == cities["berlin"]["pca_explained_variance"]
    with PreparedData(tmp_path) as data:
        h, w = data.target.shape
        x = data.target.read("msi", 0, h, 0, w)
        clipped = ((x == 0) | (x == 1)).mean()
        assert 0.02 < clipped < 0.1  # about 2 % clipped at each end


def test_options_validated():
    with pytest.raises(ValueError):
        PrepareOptions(pca_fit="everything")
    with pytest.raises(ValueError):
        PrepareOptions(percentiles=(90, 10))


# --- the windowed Dataset the baseline trains on ---

torch = pytest.importorskip("torch")


def test_dataset_windows_match_cache(prepared_ab):
    from c2seg_baseline.datasets import C2SegPrepared, split_image

    ds = C2SegPrepared(prepared_ab, "target", window=32, stride=16)
    with PreparedData(prepared_ab) as data:
        h, w = data.target.shape
        assert len(ds) == len(window_origins(h, w, 32, 16))
        item = ds[len(ds) - 1]
        r0, c0 = item["origin"].tolist()
        hsi = split_image(item["image"], ds.channels)["hsi"]
        np.testing.assert_array_equal(hsi.numpy(), data.target.read("hsi", r0, r0 + 32, c0, c0 + 32))
        np.testing.assert_array_equal(item["mask"].numpy(), data.target.read_label(r0, r0 + 32, c0, c0 + 32))
        assert item["mask"].dtype == torch.int64


def test_dataset_pads_small_city(prepared_ab):
    """Past a city smaller than the window: the mask 0 (ignored), the images reflected as prediction pads them."""
    from c2seg_baseline.datasets import C2SegPrepared, split_image

    ds = C2SegPrepared(prepared_ab, "source", window=512, stride=256)
    item = ds[0]
    h, w = ds.city.shape
    msi = split_image(item["image"], ds.channels)["msi"].numpy()
    assert msi.shape == (4, 512, 512)
    assert (item["mask"][h:, :] == 0).all() and (item["mask"][:h, :w] > 0).any()
    np.testing.assert_array_equal(msi[:, :h, w:2 * w], msi[:, :h, w - 1::-1])


def test_augmentation_keeps_image_and_label_aligned(prepared_ab):
    """Replace the label by a channel of the image: after augmentation they must still match."""
    from c2seg_baseline.windows import augment_window

    rng = np.random.default_rng(0)
    img = rng.random((3, 8, 8)).astype(np.float32)
    label = (img[0] * 13).astype(np.uint8)
    seen = set()
    for seed in range(40):
        arrays, lab = augment_window({"x": img}, label, np.random.default_rng(seed))
        np.testing.assert_array_equal((arrays["x"][0] * 13).astype(np.uint8), lab)
        seen.add(arrays["x"].tobytes())
    assert len(seen) == 8  # all 8 dihedral transforms occur


def test_augmentation_deterministic_across_workers(prepared_ab):
    from torch.utils.data import DataLoader

    from c2seg_baseline.datasets import C2SegPrepared

    def run(workers):
        ds = C2SegPrepared(prepared_ab, "source", window=32, stride=32, augment=True, seed=5)
        ds.set_epoch(2)
        loader = DataLoader(ds, batch_size=4, num_workers=workers)
        return torch.cat([b["image"] for b in loader])

    a, b = run(0), run(2)
    assert torch.equal(a, b)
    ds = C2SegPrepared(prepared_ab, "source", window=32, stride=32, augment=True, seed=5)
    plain = C2SegPrepared(prepared_ab, "source", window=32, stride=32)
    assert any(not torch.equal(ds[i]["image"], plain[i]["image"]) for i in range(len(ds)))


def test_prepare_bw_with_beijing_like_extra_hsi_cells(tmp_path):
    """Real Beijing has one more 30 m column than ceil(W / 3): prepare crops it away."""
    from scene_support import write_bw_city

    bw = TRACKS["BW"]
    write_bw_city(tmp_path, bw.source, 40, 26, seed=1, extra_cells=(1, 1))
    write_bw_city(tmp_path, bw.target, 33, 30, seed=2)
    prepare(tmp_path, bw, tmp_path / "p", PrepareOptions(pca_components=3), progress=False)
    with PreparedData(tmp_path / "p") as data:
        assert data.source.shape == (40, 26) and data.target.shape == (33, 30)
        assert data.source.channels["hsi"] == 3
        assert np.isfinite(data.source.read("hsi", 0, 40, 0, 26)).all()
