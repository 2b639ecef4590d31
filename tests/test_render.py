"""c2seg_kit.render: class colours exact, streamed rendering equals in-memory, confusion PNG."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from c2seg_kit.classes import palette
from c2seg_kit.render import render_confusion_png, render_png, render_rows_png


def _pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def test_every_class_gets_its_official_colour(tmp_path):
    classes = np.repeat(np.arange(14, dtype=np.uint8)[None, :], 3, axis=0)
    rgb = _pixels(render_png(classes, tmp_path / "m.png", legend=False))
    np.testing.assert_array_equal(rgb[10:13, 10:24], np.array(palette(), np.uint8)[classes])


@pytest.mark.parametrize("max_side", [7, 50, 64, 1000])
@pytest.mark.parametrize("rows", [1, 5, 13, 64])
def test_streamed_rendering_equals_in_memory(tmp_path, max_side, rows):
    a = np.random.default_rng(0).integers(0, 14, (64, 45), dtype=np.uint8)
    whole = _pixels(render_png(a, tmp_path / "a.png", title="t", max_side=max_side))
    streamed = _pixels(render_rows_png(a.shape, ((r, a[r : r + rows]) for r in range(0, 64, rows)),
                                       tmp_path / "b.png", title="t", max_side=max_side))
    np.testing.assert_array_equal(whole, streamed)


def test_downsampling_keeps_every_kth_pixel(tmp_path):
    a = np.random.default_rng(1).integers(0, 14, (90, 40), dtype=np.uint8)
    rgb = _pixels(render_png(a, tmp_path / "a.png", legend=False, max_side=30))
    k = 3
    np.testing.assert_array_equal(rgb[10:40, 10:24], np.array(palette(), np.uint8)[a[::k, ::k]])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 3, 3), np.uint8), r"^class map must be a non-empty 2-D \(H x W\) array, got shape \(3, 3, 3\)$"),
    (np.zeros((3, 3), np.float32), "^class map must hold integers, got dtype float32$"),
    (np.full((3, 3), 14), r"^class map has 9 values outside 0..13 \(seen: 14\)$"),
])
def test_render_refuses_non_class_maps(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        render_png(bad, tmp_path / "x.png")


def test_confusion_png(tmp_path):
    m = np.random.default_rng(2).integers(0, 1000, (13, 14))
    m[3] = 0  # an empty row must not divide by zero
    rgb = _pixels(render_confusion_png(m, tmp_path / "cm.png", title="AB"))
    # Each cell is filled with its row share on a white-to-dark-blue scale; a pixel just inside a
    # cell's corner shows the fill (the outline is the border, the label starts further in).
    cell, x0, y0 = 38, 10 + 30, 44 + 28  # cell size and the grid's corner with a title
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    for i in range(13):
        for j in range(14):
            want = [round(255 - share[i, j] * (255 - t)) for t in (8, 48, 107)]
            assert rgb[y0 + i * cell + 2, x0 + j * cell + 2].tolist() == want, (i, j)
    with pytest.raises(ValueError, match="13 x 14"):
        render_confusion_png(np.zeros((14, 14)), tmp_path / "bad.png")
