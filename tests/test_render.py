"""c2seg_kit.render: class colours exact, streamed rendering equals in-memory, confusion PNG."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from c2seg_kit.classes import palette
from c2seg_kit.render import (
    GAP_RGB,
    render_confusion_png,
    render_mosaic_png,
    render_png,
    render_rows_png,
    render_sheet_png,
    sheet_grid,
)


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


def test_contact_sheet_of_tiles_of_several_sizes(tmp_path):
    rng = np.random.default_rng(2)
    tiles = {str(i): rng.integers(0, 14, (9 - i % 3, 7 + i % 2), dtype=np.uint8) for i in range(7)}
    shapes = {t: a.shape for t, a in tiles.items()}
    rgb = _pixels(render_sheet_png(shapes, tiles.items(), tmp_path / "s.png", legend=False))
    # 7 tiles: 3 columns, 3 rows, cells of the largest tile (9 x 8) plus a 1-pixel gap, no reduction
    assert sheet_grid(7, (9, 8), 2048) == (3, 3, 1)
    colours = np.array([*palette(), GAP_RGB], np.uint8)
    for i, a in enumerate(tiles.values()):
        r0, c0 = 10 + (i // 3) * 10, 10 + (i % 3) * 9
        np.testing.assert_array_equal(rgb[r0 : r0 + a.shape[0], c0 : c0 + a.shape[1]], colours[a])
        if a.shape[0] < 9:  # the rest of a smaller tile's cell is grey
            assert (rgb[r0 + a.shape[0], c0] == GAP_RGB).all()


@pytest.mark.parametrize("max_side", [3, 4, 10, 40, 100])
def test_sheet_fits_max_side(max_side):
    for n in (1, 2, 5, 140, 850):
        rows, cols, k = sheet_grid(n, (256, 200), max_side)
        assert rows * cols >= n and cols >= rows
        side = max(rows * (-(-256 // k) + 1), cols * (-(-200 // k) + 1)) - 1
        assert side <= max_side or k == 256  # the smallest stride that fits, or one pixel per cell


def test_mosaic_later_tiles_cover_earlier_ones(tmp_path):
    a, b = np.full((4, 4), 3, np.uint8), np.full((4, 4), 5, np.uint8)
    rgb = _pixels(render_mosaic_png((6, 6), {"0": (0, 0), "1": (2, 2)}, [("0", a), ("1", b)], tmp_path / "m.png",
                                    legend=False))
    expected = np.full((6, 6), 14, np.uint8)
    expected[:4, :4], expected[2:, 2:] = 3, 5
    np.testing.assert_array_equal(rgb[10:16, 10:16], np.array([*palette(), GAP_RGB], np.uint8)[expected])
