"""The scenes of the side-by-side benchmark against the authors' pipeline
(bench/authors_side_by_side.py): what its figures rest on is that the flat scene's components 9-11
nearly tie and the spread scene's do not, with the land cover in components 1-8 of both, and that
their own AB code, which repairs no NaN, is fed none."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.io


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "authors_side_by_side.py"
    spec = importlib.util.spec_from_file_location("authors_side_by_side", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gaps(bench, folder: Path, city: str) -> np.ndarray:
    """Relative eigenvalue gaps (j, j+1), j = 1..11, in percent."""
    values = np.array(bench.spectrum(folder, f"{city}_multimodal.mat"))
    return 100 * (values[:-1] - values[1:]) / values[:-1]


@pytest.mark.parametrize("kind", ["flat", "spread"])
def test_the_flat_scene_ties_components_9_to_11_and_the_spread_one_does_not(bench, tmp_path, kind):
    bench.make_scene(tmp_path, kind, 0.2, 0)
    for city in ("augsburg", "berlin"):
        g = gaps(bench, tmp_path, city)
        assert np.all(g[:8] > 10), g  # the land cover: 8 well separated components, then the tail
        if kind == "flat":
            assert np.all(g[8:10] < 1), g  # (9, 10) and (10, 11) within 1 %: the solvers disagree there
        else:
            assert np.all(g[8:] > 10), g
        scene = scipy.io.loadmat(str(tmp_path / f"{city}_multimodal.mat"))
        hsi = scene["HSI"]
        assert hsi.dtype == np.float32 and np.array_equal(hsi, np.rint(hsi))  # integer-scaled
        assert 500 < hsi.mean() < 3500
        assert not np.isnan(scene["MSI"]).any() and not np.isnan(scene["SAR"]).any()
        assert len(np.unique(scene["label"])) >= 8


def test_a_nan_pixel_becomes_the_mean_of_its_neighbours_also_at_the_edge(bench):
    x = np.arange(5 * 4 * 2, dtype=np.float32).reshape(5, 4, 2)
    x[2, 1, 0] = np.nan
    x[0, 3, 1] = np.nan  # a corner: the neighbours inside the image
    want_inside = np.mean([x[1, 1, 0], x[3, 1, 0], x[2, 0, 0], x[2, 2, 0]])
    want_corner = np.mean([x[1, 3, 1], x[0, 2, 1]])
    fixed = bench.repair_nan(x.copy())
    assert fixed[2, 1, 0] == pytest.approx(want_inside) and fixed[0, 3, 1] == pytest.approx(want_corner)
    assert not np.isnan(fixed).any()


def test_a_folder_without_the_authors_loader_is_refused_in_one_line(bench, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["authors_side_by_side.py", "--authors", str(tmp_path), "--side-python", "python3"])
    with pytest.raises(SystemExit) as stop:
        bench.main()
    assert str(stop.value) == f"{tmp_path} holds no data/dataset.py: not a checkout of the authors' repository"
