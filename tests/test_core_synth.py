"""The synthetic cities are a fair stand-in: real layout, coherent regions, consistent spectra, a shift."""

from __future__ import annotations

import h5py
import numpy as np
import scipy.io

from c2seg_kit.io.scene import open_city
from c2seg_kit.registry import TRACKS
from c2seg_kit.synth.scenes import build_cities, city_shape, synthesize

AB, BW = TRACKS["AB"], TRACKS["BW"]


def test_ab_layout_is_matlab_v5(synth_ab):
    for city in AB.cities:
        names = {v[0]: v[1] for v in scipy.io.whosmat(str(synth_ab / city.scene_file))}
        h, w = city_shape(city, 0.1)
        assert names == {"HSI": (h, w, 242), "MSI": (h, w, 4), "SAR": (h, w, 2), "label": (h, w)}


def test_bw_layout_is_matlab_v73(synth_bw):
    for city in BW.cities:
        h, w = city_shape(city, 0.02)
        path = synth_bw / city.scene_file
        assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
        with h5py.File(path) as f:
            assert f["MSI"].shape == (4, w, h) and f["SAR"].shape == (2, w, h)
            assert f["HSI"].shape == (116, -(-w // 3), -(-h // 3))
            assert f["MSI"].attrs["MATLAB_class"] == b"single"
        with h5py.File(synth_bw / city.label_file) as f:
            assert f["label"].shape == (w, h)


def test_labels_h5_is_the_target_label(synth_bw):
    with h5py.File(synth_bw / "labels.h5") as f, open_city(synth_bw, BW, BW.target) as scene:
        assert f.attrs["c2seg_format"] == "labels/1" and f.attrs["track"] == "BW"
        h, w = scene.shape
        np.testing.assert_array_equal(f["label"][()], scene.read_label(0, h, 0, w))


def _labels(folder, track, city):
    with open_city(folder, track, city) as s:
        return s.read_label(0, s.shape[0], 0, s.shape[1])


def test_regions_are_spatially_coherent(synth_ab):
    label = _labels(synth_ab, AB, AB.target)
    same = np.mean(label[1:] == label[:-1]) + np.mean(label[:, 1:] == label[:, :-1])
    assert same / 2 > 0.85  # pixel noise would give ~ 1/14
    assert 0.02 < np.mean(label == 0) < 0.5  # unlabelled patches present (about 20 % on average)
    assert len(np.unique(label)) >= 8


def test_class_frequencies_differ_between_cities(synth_ab):
    freq = [np.bincount(_labels(synth_ab, AB, c).ravel(), minlength=14)[1:] for c in AB.cities]
    p, q = (f / f.sum() for f in freq)
    assert 0.5 * np.abs(p - q).sum() > 0.15  # total-variation distance


def test_spectra_consistent_and_shifted():
    """Same class -> same spectrum shape in both cities; target shifted by gain/illumination/SAR offset."""
    src, tgt = build_cities(AB, 0.2, seed=4)
    assert np.array_equal(src.spectra, tgt.spectra)
    covers = {gen.city.name: gen.cover(0, gen.shape[0]) for gen in (src, tgt)}
    counts = np.minimum(*(np.bincount(c[0].ravel(), minlength=14) for c in covers.values()))
    cls = int(np.argmax(counts))  # a class well present in both cities
    stats = {}
    for gen in (src, tgt):
        true, label, bright, illum = covers[gen.city.name]
        msi = gen.msi(true, bright, illum, 0)
        hsi = gen.hsi(true, bright, illum, 0)
        sar = gen.sar(true, 0)
        # MSI agrees with the HSI at the MSI band centres (same spectra, same pixel)
        near = hsi[..., gen.msi_index]
        corr = np.corrcoef(near.ravel(), msi.ravel())[0, 1]
        assert corr > 0.9
        assert np.isnan(sar).any()
        stats[gen.city.name] = (msi[true == cls].mean(axis=0), np.nanmean(sar[true == cls]))
    (m_src, s_src), (m_tgt, s_tgt) = stats["augsburg"], stats["berlin"]
    assert np.abs(m_tgt / m_src - 1).max() > 0.1  # spectral gain / illumination shift
    assert abs((s_tgt - s_src) - 3.0) < 1.0  # SAR calibration offset, 3 dB


def test_seed_determinism(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        synthesize(out, BW, scale=0.01, seed=9, progress=False)
    for name in ("wuhan.mat", "beijing_label.mat"):
        with h5py.File(a / name) as fa, h5py.File(b / name) as fb:
            for key in fa:
                np.testing.assert_array_equal(fa[key][()], fb[key][()])
    synthesize(tmp_path / "c", BW, scale=0.01, seed=10, progress=False)
    with h5py.File(a / "labels.h5") as fa, h5py.File(tmp_path / "c" / "labels.h5") as fc:
        assert not np.array_equal(fa["label"][()], fc["label"][()])


def test_source_only_model_loses_accuracy_on_target(synth_ab):
    """The documented shift matters: a pixel classifier trained on the source does worse on the target."""
    from sklearn.linear_model import LogisticRegression

    feats = {}
    for city in AB.cities:
        with open_city(synth_ab, AB, city) as s:
            h, w = s.shape
            x = np.concatenate([s.read("msi", 0, h, 0, w), s.read("sar", 0, h, 0, w)], axis=-1).reshape(h * w, -1)
            y = s.read_label(0, h, 0, w).ravel()
        keep = (y > 0) & np.isfinite(x).all(axis=1)
        feats[city.name] = (x[keep], y[keep])
    xs, ys = feats["augsburg"]
    xt, yt = feats["berlin"]
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(xs))
    half = len(idx) // 2
    clf = LogisticRegression(max_iter=300).fit(xs[idx[:half]], ys[idx[:half]])
    source_acc = clf.score(xs[idx[half:]], ys[idx[half:]])
    target_acc = clf.score(xt, yt)
    assert source_acc - target_acc > 0.15
