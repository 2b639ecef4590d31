"""`prepare --pca-solver authors`: scikit-learn 1.3.2's randomized PCA as the authors ran it.

The oracle is tests/fixtures/pca_authors.npz, written once by
tests/fixtures/make_pca_authors_fixtures.py under scikit-learn 1.3.2 and numpy 1.26.4 (its
docstring says how to run it again): the authors' ``np.random.seed(0)`` then
``PCA(n_components=10).fit`` on a source city and then a target city, for a spectrum with a flat
tail (7 power iterations) and a spread one (4). Nothing here imports scikit-learn.

Tolerances: components agree to float32 rounding (3e-5) except inside a pair of nearly tied
eigenvalues (relative gap under 1 %), where rounding is amplified by about 1 / gap: there each
component agrees to 5e-4 and the plane the pair spans to 3e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from city_tiles import make_city_tiles
from cli_support import run_cli

from c2seg_kit.io.tiles import open_tiles
from c2seg_kit.prepare.pca import PCA, Moments
from c2seg_kit.prepare.pca_authors import _RowSum, authors_iterations, authors_randomized_pca
from c2seg_kit.prepare.pipeline import PrepareOptions, prepare
from c2seg_kit.prepare.steps import near_ties
from c2seg_kit.prepare.tile_city import pixels_of
from c2seg_kit.registry import TRACKS

FIXTURE = Path(__file__).parent / "fixtures" / "pca_authors.npz"
AB, BW = TRACKS["AB"], TRACKS["BW"]
CITIES = ("source", "target")
K = 10


@pytest.fixture(scope="module")
def oracle():
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def case(oracle, name, city):
    return {what: oracle[f"{name}_{city}_{what}"]
            for what in ("x", "shape", "components", "mean", "evr", "projected", "solver")}


def in_pieces(x, cuts=(0, 1, 137, 400)):
    """A block source cutting the pixels unevenly (the result must not depend on it)."""
    bounds = [c for c in cuts if c < len(x)] + [len(x)]
    return lambda: (x[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))


def assert_components_match(ours: np.ndarray, theirs: np.ndarray, gaps: list[float]) -> None:
    """(k, C) components, ours and scikit-learn's: see the module docstring for the tolerances."""
    tied = {j for a, b, _ in near_ties(gaps) for j in (a - 1, b - 1) if j < len(theirs)}
    for j in range(len(theirs)):
        tol = 5e-4 if j in tied else 3e-5
        np.testing.assert_allclose(ours[j], theirs[j], atol=tol, err_msg=f"component {j + 1}")
    for a, b, _ in near_ties(gaps):
        if b <= len(theirs):
            pair = slice(a - 1, b)
            np.testing.assert_allclose(ours[pair].T @ ours[pair], theirs[pair].T @ theirs[pair].astype(np.float64),
                                       atol=3e-5, err_msg=f"the plane of components {a} and {b}")


@pytest.mark.parametrize("name, iterations", [("flat", 7), ("spread", 4)])
def test_the_authors_solver_reproduces_scikit_learn_city_after_city(oracle, name, iterations):
    rng = np.random.RandomState(0)  # their main()'s np.random.seed(0)
    for city in CITIES:  # the source city draws first, the target city next, from the same stream
        c = case(oracle, name, city)
        assert str(c["solver"]) == "randomized"
        x = c["x"].astype(np.float32)
        assert authors_iterations(*x.shape, K) == iterations  # the fixture exercises this iteration count
        ours = authors_randomized_pca(in_pieces(x), K, np.float32, rng)
        assert ours.solver == "authors" and ours.signed
        np.testing.assert_array_equal(ours.mean.astype(np.float32), c["mean"])  # numpy's float32 mean, exactly
        assert_components_match(ours.components.T, c["components"], ours.eigen_gaps())
        np.testing.assert_allclose(ours.explained_variance_ratio, c["evr"], rtol=1e-5)
        # the authors' projection X @ components_.T: off by at most |x| x the components' tolerance
        rows = x[: len(c["projected"])]
        tied = {j - 1 for pair in near_ties(ours.eigen_gaps()) for j in pair[:2]}
        tol = np.array([5e-4 if j in tied else 3e-5 for j in range(K)])
        bound = np.linalg.norm(rows, axis=1)[:, None] * tol
        assert np.all(np.abs(rows @ ours.components.astype(np.float32) - c["projected"]) <= bound)


def test_on_a_flat_tail_the_exact_solver_and_a_fresh_stream_give_other_components(oracle):
    """What the test above could tell apart: the exact decomposition, and the target city fitted
    on a stream the source city had not drawn from first."""
    src, tgt = (case(oracle, "flat", city) for city in CITIES)
    moments = Moments(src["x"].shape[1])
    moments.add(src["x"].astype(np.float32))
    exact = PCA.from_moments(moments, K).components.T
    signs = np.sign(np.sum(exact * src["components"], axis=1))
    assert np.abs(exact * signs[:, None] - src["components"]).max() > 0.05
    fresh = authors_randomized_pca(in_pieces(tgt["x"].astype(np.float32)), K, np.float32, np.random.RandomState(0))
    assert np.abs(fresh.components.T - tgt["components"]).max() > 1e-3


def test_the_streamed_mean_is_numpys_whatever_the_blocks():
    x = (np.random.default_rng(3).random((5000, 7)) * 3000 + 500).astype(np.float32)
    whole = x.sum(axis=0)
    pieces = _RowSum()
    for a, b in ((0, 1), (1, 2000), (2000, 2001), (2001, 5000)):
        pieces.add(x[a:b])
    np.testing.assert_array_equal(pieces.total, whole)
    assert not np.array_equal(whole, x.astype(np.float64).sum(axis=0).astype(np.float32))  # float32 rounding shows


def test_a_small_matrix_takes_the_exact_svd_and_draws_nothing():
    """scikit-learn's 'auto' runs an exact SVD on at most 500 pixels: no random numbers drawn."""
    x = np.random.default_rng(1).normal(size=(500, 30)).astype(np.float32)
    rng = np.random.RandomState(0)
    ours = authors_randomized_pca(in_pieces(x), K, np.float32, rng)
    moments = Moments(30)
    moments.add(x)
    np.testing.assert_array_equal(ours.components, PCA.from_moments(moments, K).components)
    assert not ours.signed  # the write pass orients it by the rule the exact SVD's U follows
    assert rng.normal() == np.random.RandomState(0).normal()


def write_bw_scene(folder, city, hsi):
    """A BW scene (MATLAB v7.3 layout: axes reversed) holding this (rows, cols, 116) HSI on the 30 m grid."""
    rng = np.random.default_rng(7)
    h, w = 3 * hsi.shape[0], 3 * hsi.shape[1]
    with h5py.File(folder / city.scene_file, "w") as f:
        f["HSI"] = hsi.transpose(2, 1, 0)
        f["MSI"] = rng.random((h, w, 4)).astype(np.float32).transpose(2, 1, 0)
        f["SAR"] = rng.normal(size=(h, w, 2)).astype(np.float32).transpose(2, 1, 0)
    with h5py.File(folder / city.label_file, "w") as f:
        f["label"] = rng.integers(0, 14, (h, w)).astype(np.uint8).T


@pytest.fixture(scope="module")
def bw_flat(oracle, tmp_path_factory):
    """The flat-tail fixture written as a BW city pair (116 bands, float32 files)."""
    folder = tmp_path_factory.mktemp("bw_flat")
    for city, role in zip(BW.cities, CITIES, strict=True):
        c = case(oracle, "flat", role)
        write_bw_scene(folder, city, c["x"].astype(np.float32).reshape(*c["shape"], -1))
    return folder


def test_prepare_with_the_authors_solver_gives_scikit_learns_components(oracle, bw_flat, tmp_path):
    out = tmp_path / "prep"
    manifest = prepare(bw_flat, BW, out, PrepareOptions(pca_solver="authors", band_rows=12), progress=False)
    assert manifest["options"]["pca_solver"] == "authors" and manifest["pca"]["solver"].startswith("authors:")
    for city, role in zip(BW.cities, CITIES, strict=True):
        report = manifest["cities"][city.name]
        with h5py.File(out / f"{city.name}.h5") as f:
            ours = f["pca_components"][()].T
        assert_components_match(ours, case(oracle, "flat", role)["components"], report["pca_eigen_gaps"])
        assert len(report["pca_eigen_gaps"]) == K and len(report["pca_exact_agreement"]) == K
        assert min(report["pca_exact_agreement"]) < 0.99  # the flat tail: not the exact solver's directions
    exact = prepare(bw_flat, BW, tmp_path / "exact", PrepareOptions(band_rows=12), progress=False)
    assert exact["options"]["pca_solver"] == "exact" and exact["cities"]["beijing"]["pca_exact_agreement"] == []
    assert exact["cities"]["beijing"]["pca_eigen_gaps"] == manifest["cities"]["beijing"]["pca_eigen_gaps"]


def test_prepare_and_info_say_which_components_are_nearly_tied(bw_flat, tmp_path, capsys):
    out = tmp_path / "prep"
    code, stdout, stderr = run_cli(capsys, "prepare", bw_flat, "--track", "BW", "--out", out, "--pca-solver",
                                   "authors", "--quiet")
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    gaps = manifest["cities"]["wuhan"]["pca_eigen_gaps"]
    a, b, gap = near_ties(gaps)[0]
    note = f"note: PCA components {a} and {b} are nearly tied (eigenvalues {100 * gap:.2f} % apart, under 1 %)"
    assert note in stdout and "two solvers (exact, the authors' randomized one) give other directions" in stdout
    assert "(the first one left out)" in stdout  # Beijing's 10th and 11th eigenvalues nearly tie
    code, stdout, stderr = run_cli(capsys, "info", out, "--track", "BW")
    assert code == 0, stderr
    assert "solver authors" in stdout and note in stdout
    code, _, stderr = run_cli(capsys, "info", out, "--track", "AB")
    assert code == 1 and stderr.strip().endswith("is prepared for track BW, not AB")


def test_the_authors_solver_fits_every_pixel(bw_flat, tmp_path, capsys):
    with pytest.raises(ValueError, match="cannot be combined with a PCA sample"):
        PrepareOptions(pca_solver="authors", pca_sample=1000)
    code, _, stderr = run_cli(capsys, "prepare", bw_flat, "--track", "BW", "--out", tmp_path / "p", "--pca-solver",
                              "authors", "--pca-sample", "1000", "--quiet")
    assert code == 2 and "cannot be combined with a PCA sample" in stderr
    assert not (tmp_path / "p").exists()


def test_on_tiles_the_pixels_go_in_tile_order_and_the_stream_city_after_city(tmp_path):
    make_city_tiles(tmp_path / "C2Seg_AB")
    prepare(tmp_path, AB, tmp_path / "prep", PrepareOptions(pca_solver="authors"), progress=False)
    rng = np.random.RandomState(0)
    with open_tiles(tmp_path / "C2Seg_AB", AB) as tiles:
        for split, city in (("train", "augsburg"), ("test", "berlin")):
            s = tiles.splits[split]
            pixels = np.concatenate([pixels_of(s.read("hsi", i)) for i in s.ids])
            expected = authors_randomized_pca(lambda p=pixels: iter([p]), K, np.float32, rng)
            with h5py.File(tmp_path / "prep" / f"{city}.h5") as f:
                np.testing.assert_array_equal(f["pca_components"][()], expected.components)


def test_the_solver_runs_in_the_precision_the_authors_data_had():
    """AB: their loader casts the HSI to float32. BW: the file's type, which scikit-learn keeps when
    float32 or float64 and otherwise turns into float64."""
    from c2seg_kit.prepare.steps import AuthorsStream

    ab, bw = AuthorsStream("AB", 0), AuthorsStream("BW", 0)
    assert {ab.dtype(t) for t in (np.uint16, np.float64, np.float32)} == {np.dtype(np.float32)}
    assert bw.dtype(np.float32) == np.float32
    assert bw.dtype(np.float64) == bw.dtype(np.uint16) == bw.dtype(np.int16) == np.float64
    x = np.random.default_rng(2).normal(size=(600, 40)) * 30 + 500
    single = authors_randomized_pca(in_pieces(x), K, np.float32, np.random.RandomState(0))
    double = authors_randomized_pca(in_pieces(x), K, np.float64, np.random.RandomState(0))
    assert not np.array_equal(single.components, double.components)
    np.testing.assert_allclose(np.abs(np.sum(single.components * double.components, axis=0))[:3], 1, atol=1e-4)
