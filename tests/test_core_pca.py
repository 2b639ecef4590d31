"""prepare's PCA: the exact all-pixel fit, the authors' sign rule, the sampled fit.

Every expectation comes from tests/pca_oracle.py (numpy SVD + scikit-learn 1.3's sign rule
written out), never from the installed scikit-learn, whose current releases use the other rule.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from pca_oracle import authors_pca, loading_rule_disagreements, minmax_channels, structured_spectra

from c2seg_kit.io.matfile import write_mat_v5
from c2seg_kit.prepare.cache import PreparedData
from c2seg_kit.prepare.pca import PCA, ExtremeScores, Moments, Sampler
from c2seg_kit.prepare.pipeline import PrepareOptions, prepare
from c2seg_kit.registry import TRACKS

AB, BW = TRACKS["AB"], TRACKS["BW"]
K = 10


def write_ab_scene(folder, city, h, w, seed):
    rng = np.random.default_rng(seed)
    hsi = structured_spectra(rng, h * w, 242).reshape(h, w, 242).astype(np.float32)
    write_mat_v5(folder / city.scene_file, {
        "HSI": hsi, "MSI": rng.random((h, w, 4)).astype(np.float32),
        "SAR": rng.normal(size=(h, w, 2)).astype(np.float32),
        "label": rng.integers(0, 14, (h, w)).astype(np.uint8)})
    return hsi


def write_bw_scene(folder, city, h, w, seed, extra=(0, 0)):
    """MATLAB v7.3 as the real BW files: axes reversed, HSI on the 30 m grid (plus extra cells, as Beijing)."""
    rng = np.random.default_rng(seed)
    hc, wc = -(-h // 3) + extra[0], -(-w // 3) + extra[1]
    hsi = structured_spectra(rng, hc * wc, 40).reshape(hc, wc, 40).astype(np.float32)
    with h5py.File(folder / city.scene_file, "w") as f:
        f["HSI"] = hsi.transpose(2, 1, 0)
        f["MSI"] = rng.random((h, w, 4)).astype(np.float32).transpose(2, 1, 0)
        f["SAR"] = rng.normal(size=(h, w, 2)).astype(np.float32).transpose(2, 1, 0)
    with h5py.File(folder / city.label_file, "w") as f:
        f["label"] = rng.integers(0, 14, (h, w)).astype(np.uint8).T
    return hsi


@pytest.fixture(scope="module")
def ab_scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pca_ab")
    hsi = {AB.source.name: write_ab_scene(folder, AB.source, 40, 60, 1),
           AB.target.name: write_ab_scene(folder, AB.target, 50, 30, 2)}
    return folder, hsi


@pytest.fixture(scope="module")
def ab_prepared(ab_scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("pca_ab_prep") / "prep"
    return prepare(ab_scenes[0], AB, out, progress=False), out


def cache_components(prep, name):
    with h5py.File(prep / f"{name}.h5") as f:
        return f["pca_components"][()].T  # (k, C), as scikit-learn's components_


@pytest.mark.parametrize("city", ["augsburg", "berlin"])
def test_ab_all_pixel_fit_with_the_authors_signs(ab_scenes, ab_prepared, city):
    folder, hsi = ab_scenes
    manifest, prep = ab_prepared
    h, w, c = hsi[city].shape
    oracle = authors_pca(hsi[city].reshape(-1, c), K)
    assert loading_rule_disagreements(oracle) >= 2  # the data can tell the two sign rules apart
    np.testing.assert_allclose(cache_components(prep, city), oracle, atol=1e-8)
    # the normalised channels: the authors project without centring, then min-max each channel
    expected = minmax_channels(hsi[city].astype(np.float64) @ oracle.T).transpose(2, 0, 1)
    with PreparedData(prep) as data:
        np.testing.assert_allclose(data.city(city).read("hsi", 0, h, 0, w), expected, atol=2e-6)
    assert manifest["pca"]["fit"] == "all pixels" and "scikit-learn 1.3" in manifest["pca"]["sign_rule"]
    assert manifest["cities"][city]["pca_fit_pixels"] == h * w


@pytest.mark.parametrize("extra", [(0, 0), (0, 1)])  # (0, 1): Beijing's extra 30 m column
def test_bw_fit_on_the_30m_grid_with_the_authors_signs(tmp_path, extra):
    hsi = {BW.source.name: write_bw_scene(tmp_path, BW.source, 46, 40, 3, extra),
           BW.target.name: write_bw_scene(tmp_path, BW.target, 33, 51, 4)}
    shapes = {BW.source.name: (46, 40), BW.target.name: (33, 51)}
    manifest = prepare(tmp_path, BW, tmp_path / "prep", PrepareOptions(band_rows=12), progress=False)
    with PreparedData(tmp_path / "prep") as data:
        for city, cube in hsi.items():
            h, w = shapes[city]
            oracle = authors_pca(cube.reshape(-1, cube.shape[-1]), K)  # every 30 m cell, extra ones included
            assert loading_rule_disagreements(oracle) >= 2
            np.testing.assert_allclose(cache_components(tmp_path / "prep", city), oracle, atol=1e-8)
            # 30 m -> 10 m: nearest upsampling cropped to the 10 m grid, then min-max per channel
            projected = (cube.astype(np.float64) @ oracle.T).repeat(3, axis=0).repeat(3, axis=1)[:h, :w]
            expected = minmax_channels(projected).transpose(2, 0, 1)
            np.testing.assert_allclose(data.city(city).read("hsi", 0, h, 0, w), expected, atol=2e-6)
            assert manifest["cities"][city]["pca_fit_pixels"] == cube.shape[0] * cube.shape[1]


def test_sampled_fit_agrees_in_sign_with_the_all_pixel_fit(ab_scenes, ab_prepared, tmp_path):
    manifest = prepare(ab_scenes[0], AB, tmp_path / "s", PrepareOptions(pca_sample=1000), progress=False)
    assert manifest["pca"]["fit"] == "sample of 1000 pixels"
    for city in ("augsburg", "berlin"):
        assert manifest["cities"][city]["pca_fit_pixels"] == 1000
        sampled = cache_components(tmp_path / "s", city)
        exact = cache_components(ab_prepared[1], city)
        cos = np.sum(sampled * exact, axis=1)
        assert (cos > 0.5).all(), cos  # same axes, same orientation
        assert not np.allclose(sampled, exact, atol=1e-8)  # and really a different (sampled) fit


def test_source_fit_orients_by_the_source_city(ab_scenes, tmp_path):
    folder, hsi = ab_scenes
    prepare(folder, AB, tmp_path / "p", PrepareOptions(pca_fit="source"), progress=False)
    src = hsi["augsburg"]
    oracle = authors_pca(src.reshape(-1, src.shape[-1]), K)
    np.testing.assert_allclose(cache_components(tmp_path / "p", "berlin"), oracle, atol=1e-8)
    tgt = hsi["berlin"]
    with PreparedData(tmp_path / "p") as data:
        h, w = data.target.shape
        expected = minmax_channels(tgt.astype(np.float64) @ oracle.T).transpose(2, 0, 1)
        np.testing.assert_allclose(data.target.read("hsi", 0, h, 0, w), expected, atol=2e-6)


def test_moments_are_exact_and_independent_of_blocking():
    rng = np.random.default_rng(0)
    x = structured_spectra(rng, 5000, 16).astype(np.float32)
    whole = Moments(16, chunk=700)
    whole.add(x)
    pieces = Moments(16, chunk=700)
    for a, b in ((0, 1), (1, 999), (999, 3001), (3001, 5000)):
        pieces.add(x[a:b])
    n, mean, cov = whole.finish()
    n2, mean2, cov2 = pieces.finish()
    assert n == n2 == 5000
    np.testing.assert_array_equal(mean, mean2)
    np.testing.assert_array_equal(cov, cov2)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-9)


def test_sampler_is_uniform_sized_and_independent_of_blocking():
    x = np.arange(3000, dtype=np.float32).reshape(-1, 1).repeat(2, axis=1)
    keep = (np.arange(3000) % 7) != 0
    a, b = Sampler(500, np.random.default_rng(5)), Sampler(500, np.random.default_rng(5))
    a.add(x, keep)
    for lo in range(0, 3000, 37):
        b.add(x[lo : lo + 37], keep[lo : lo + 37])
    va, vb = a.values(), b.values()
    np.testing.assert_array_equal(va, vb)
    assert va.shape == (500, 2) and len(np.unique(va[:, 0])) == 500  # without replacement
    assert not np.any(va[:, 0].astype(int) % 7 == 0)  # masked rows never sampled
    small = Sampler(5000, np.random.default_rng(0))
    small.add(x)
    assert sorted(small.values()[:, 0]) == list(range(3000))  # a sample larger than the stream is all of it


def test_extreme_scores_first_pixel_wins_ties():
    ext = ExtremeScores(2)
    ext.update(np.array([[1.0, 0.5], [-3.0, 2.0]]).T, width=2)  # row 0: scores are (k, n)
    ext.update(np.array([[3.0, -2.0], [0.0, -2.5]]).T, width=2, row0=1)  # |3| ties with the earlier -3
    np.testing.assert_array_equal(ext.signs(), [-1.0, -1.0])
    assert ext.where == [[0, 1], [1, 1]]
    np.testing.assert_allclose(ext.margins(), [0.0, 1 - 2 / 2.5])  # component 0's tails tie: a fragile sign


def test_pca_from_sums_matches_an_svd():
    rng = np.random.default_rng(2)
    x = structured_spectra(rng, 3000, 12, latent=8)
    pca = PCA.from_sums(len(x), x.sum(0), x.T @ x, 4)
    oracle = authors_pca(x, 4)
    np.testing.assert_allclose(np.abs(pca.components.T @ oracle.T), np.eye(4), atol=1e-7)


def test_cli_pca_sample_switch(ab_scenes, tmp_path, capsys):
    from c2seg_kit.cli import main

    def run(*args):
        with pytest.raises(SystemExit) as exc:
            main(["prepare", str(ab_scenes[0]), "--track", "AB", "--quiet", *map(str, args)])
        return exc.value.code, *capsys.readouterr()

    code, _, err = run("--out", tmp_path / "a", "--pca-sample", "500")
    assert code == 2 and "a sample needs at least 1000 pixels, got 500" in err and not (tmp_path / "a").exists()
    code, _, err = run("--out", tmp_path / "a", "--pca-sample", "lots")
    assert code == 2 and "expected 'all' or a number of pixels" in err
    code, out, _ = run("--out", tmp_path / "b", "--pca-sample", "1_500")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert code == 0 and manifest["options"]["pca_sample"] == 1500 and manifest["pca"]["fit"] == "sample of 1500 pixels"
    assert out.splitlines()[0].startswith("augsburg: 40x60, non-finite repaired: HSI 0, MSI 0, SAR 0; PCA keeps ")
    code, out, _ = run("--out", tmp_path / "c", "--pca-sample", "ALL")
    assert code == 0 and json.loads((tmp_path / "c" / "manifest.json").read_text())["options"]["pca_sample"] is None
