"""PNG pictures of class maps and confusion matrices, in the official colours (Pillow only).

Large rasters are reduced by nearest-neighbour striding to at most ``max_side`` pixels on the
long side: class maps must keep exact class colours, so no interpolation blends them. Files of
tiles are drawn as a contact sheet (tiles in id order in a grid) or, where their georeferencing
places them, as a mosaic of the scene; either way one tile at a time is held in memory. Cells
and ground no tile covers are drawn in :data:`GAP_RGB`, a grey that is no class colour.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from c2seg_kit.classes import CLASSES, NUM_CLASSES, NUM_LABELS, as_class_map, palette
from c2seg_kit.outputs import new_file

__all__ = ["DEFAULT_MAX_SIDE", "class_map_image", "render_confusion_png", "render_mosaic_png", "render_png",
           "render_rows_png", "render_sheet_png", "sheet_grid", "text_font"]

DEFAULT_MAX_SIDE = 2048
#: Palette index and colour of ground no tile covers (and of the gaps of a contact sheet).
GAP = NUM_LABELS
GAP_RGB = (200, 200, 200)
_BG = (255, 255, 255)
_FG = (0, 0, 0)


def text_font(size: int) -> Any:
    """The font of the pictures' titles and legends, `size` pixels high where Pillow can scale it."""
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable built-in font
    except TypeError:  # pragma: no cover - older Pillow
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: Any) -> int:
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0]


def _stride(shape: tuple[int, int], max_side: int) -> int:
    return max(1, math.ceil(max(shape) / max(1, max_side)))


def class_map_image(classes: np.ndarray) -> Image.Image:
    """uint8 class ids 0..13 -> RGB image through a palette (no per-pixel Python work)."""
    img = Image.fromarray(np.ascontiguousarray(classes, dtype=np.uint8), mode="P")
    flat = [v for rgb in (*palette(), GAP_RGB) for v in rgb]
    img.putpalette(flat + [0, 0, 0] * (256 - NUM_LABELS - 1))
    return img.convert("RGB")


def _compose(map_img: Image.Image, *, legend: bool, title: str | None, present: set[int] | None) -> Image.Image:
    """Map on the left, optional title above, legend (every class, present ones marked) on the right."""
    font = text_font(14)
    pad, swatch, line = 10, 14, 20
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    legend_w = 0
    if legend:
        legend_w = pad + swatch + 8 + max(_text_width(probe, f"{c.id:>2} {c.display}", font) for c in CLASSES) + pad
    title_h = line + pad if title else 0
    legend_h = pad + line * NUM_LABELS + pad if legend else 0
    w = pad + map_img.width + pad + legend_w
    h = max(title_h + pad + map_img.height + pad, title_h + legend_h)
    canvas = Image.new("RGB", (w, h), _BG)
    canvas.paste(map_img, (pad, title_h + pad))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad), title, fill=_FG, font=font)
    if legend:
        x = pad + map_img.width + pad + pad
        y = title_h + pad
        for c in CLASSES:
            draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=c.rgb, outline=_FG)
            shade = _FG if present is None or c.id in present else (150, 150, 150)
            draw.text((x + swatch + 8, y + 1), f"{c.id:>2} {c.display}", fill=shade, font=font)
            y += line
    return canvas


def _save(img: Image.Image, out_path: str | os.PathLike) -> Path:
    """The PNG, written beside ``out_path`` and renamed into place when complete."""
    out = Path(out_path)
    with new_file(out) as tmp:
        img.save(tmp, format="PNG", optimize=False)
    return out


def render_png(array: Any, out_path: str | os.PathLike, *, legend: bool = True, title: str | None = None,
               max_side: int = DEFAULT_MAX_SIDE) -> Path:
    """Write a class map (H x W integers 0..13) as a PNG in the official colours, with a legend."""
    a = as_class_map(array, "class map")
    k = _stride(a.shape, max_side)
    return _save_map(a[::k, ::k], out_path, legend=legend, title=title)


def render_rows_png(shape: tuple[int, int], rows: Iterable[tuple[int, np.ndarray]], out_path: str | os.PathLike,
                    *, legend: bool = True, title: str | None = None, max_side: int = DEFAULT_MAX_SIDE) -> Path:
    """Like :func:`render_png` for a raster streamed as ``(r0, uint8 block)`` row blocks (a file
    reader's ``iter_rows``): only the kept rows and columns are ever held in memory."""
    k = _stride(shape, max_side)
    h, w = shape
    small = np.zeros((math.ceil(h / k), math.ceil(w / k)), dtype=np.uint8)
    for r0, block in _strided_rows(rows, k):
        small[r0 // k : r0 // k + block.shape[0]] = block
    return _save_map(small, out_path, legend=legend, title=title)


def _save_map(small: np.ndarray, out_path: str | os.PathLike, *, legend: bool, title: str | None) -> Path:
    present = {int(v) for v in np.flatnonzero(np.bincount(small.ravel(), minlength=NUM_LABELS)) if v < NUM_LABELS}
    return _save(_compose(class_map_image(small), legend=legend, title=title, present=present), out_path)


def sheet_grid(n: int, cell: tuple[int, int], max_side: int, gap: int = 1) -> tuple[int, int, int]:
    """(rows, columns, stride) of a contact sheet of ``n`` cells of ``cell`` (H, W) pixels: about
    square, cells reduced by the smallest stride that keeps the sheet (with ``gap`` pixels between
    cells) within ``max_side``."""
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    for k in range(1, max(cell) + 1):
        side = max(rows * (math.ceil(cell[0] / k) + gap), cols * (math.ceil(cell[1] / k) + gap)) - gap
        if side <= max_side:
            return rows, cols, k
    return rows, cols, max(cell)


def render_sheet_png(shapes: dict[str, tuple[int, int]], tiles: Iterable[tuple[str, np.ndarray]],
                     out_path: str | os.PathLike, *, legend: bool = True, title: str | None = None,
                     max_side: int = DEFAULT_MAX_SIDE) -> Path:
    """A contact sheet: the tiles of ``shapes`` (id -> (H, W), in the order given) row by row in
    an about square grid, each in a cell of the largest tile's size, every tile reduced by one
    stride (every k-th pixel) so the sheet fits ``max_side``. ``tiles`` streams ``(id, tile)``."""
    order = {tile_id: i for i, tile_id in enumerate(shapes)}
    cell = (max(h for h, _ in shapes.values()), max(w for _, w in shapes.values()))
    rows, cols, k = sheet_grid(len(order), cell, max_side)
    ch, cw = math.ceil(cell[0] / k) + 1, math.ceil(cell[1] / k) + 1  # + the gap
    small = np.full((rows * ch - 1, cols * cw - 1), GAP, dtype=np.uint8)
    for tile_id, tile in tiles:
        i = order[tile_id]
        kept = tile[::k, ::k]
        r0, c0 = (i // cols) * ch, (i % cols) * cw
        small[r0 : r0 + kept.shape[0], c0 : c0 + kept.shape[1]] = kept
    return _save_map(small, out_path, legend=legend, title=title)


def render_mosaic_png(shape: tuple[int, int], placements: dict[str, tuple[int, int]],
                      tiles: Iterable[tuple[str, np.ndarray]], out_path: str | os.PathLike, *, legend: bool = True,
                      title: str | None = None, max_side: int = DEFAULT_MAX_SIDE) -> Path:
    """A mosaic: each tile drawn at its (row, column) in a scene of ``shape``, reduced to every
    k-th pixel of the scene's grid (as :func:`render_rows_png`). Where tiles overlap, a tile drawn
    later covers the earlier ones; ground no tile covers is grey."""
    k = _stride(shape, max_side)
    h, w = shape
    small = np.full((math.ceil(h / k), math.ceil(w / k)), GAP, dtype=np.uint8)
    for tile_id, tile in tiles:
        r0, c0 = placements[tile_id]
        fr, fc = (-r0) % k, (-c0) % k  # the tile's first row and column on the kept grid
        kept = tile[fr::k, fc::k]
        small[(r0 + fr) // k : (r0 + fr) // k + kept.shape[0], (c0 + fc) // k : (c0 + fc) // k + kept.shape[1]] = kept
    return _save_map(small, out_path, legend=legend, title=title)


def _strided_rows(rows: Iterable[tuple[int, np.ndarray]], k: int) -> Iterator[tuple[int, np.ndarray]]:
    """Keep every k-th row and column of a stream of row blocks; yields (first kept row, block)."""
    for r0, block in rows:
        first = (-r0) % k  # offset in this block of the first row that is a multiple of k
        kept = block[first::k, ::k]
        if kept.shape[0]:
            yield r0 + first, kept


def render_confusion_png(matrix: Any, out_path: str | os.PathLike, *, title: str | None = None) -> Path:
    """The 13 x 14 confusion matrix (true 1..13 x pred 0..13) as a heat map, rows normalised,
    each cell labelled with its row percentage; class names listed beside it."""
    m = np.asarray(matrix, dtype=np.int64)
    if m.shape != (NUM_CLASSES, NUM_LABELS):
        raise ValueError(f"confusion matrix must be {NUM_CLASSES} x {NUM_LABELS}, got {m.shape}")
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, np.maximum(rows, 1), dtype=np.float64)
    cell, pad, head = 38, 10, 44
    font, small = text_font(13), text_font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    names_w = max(_text_width(probe, f"{c.id:>2} {c.display}", font) for c in CLASSES) + 2 * pad
    grid_x, grid_y = pad + 30, head + (28 if title else 0)
    w = grid_x + cell * NUM_LABELS + pad + names_w
    h = max(grid_y + cell * NUM_CLASSES + 30, grid_y + 20 * NUM_LABELS + pad)
    img = Image.new("RGB", (w, h), _BG)
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((pad, pad), title, fill=_FG, font=font)
    draw.text((grid_x, grid_y - 38), "predicted -> (row-normalised %)", fill=_FG, font=small)
    for j in range(NUM_LABELS):
        draw.text((grid_x + j * cell + cell // 2 - 6, grid_y - 18), str(j), fill=_FG, font=small)
    for i in range(NUM_CLASSES):
        draw.text((pad, grid_y + i * cell + cell // 2 - 7), f"{i + 1:>2}", fill=_FG, font=small)
        for j in range(NUM_LABELS):
            v = float(frac[i, j])
            # White to dark blue; the diagonal (correct) cells use the same scale.
            colour = tuple(round(255 - v * (255 - t)) for t in (8, 48, 107))
            x0, y0 = grid_x + j * cell, grid_y + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(220, 220, 220))
            if m[i, j]:
                label = f"{100 * v:.0f}" if v >= 0.005 else "<1"
                draw.text((x0 + 6, y0 + cell // 2 - 7), label, fill=_BG if v > 0.5 else _FG, font=small)
        ix, iy = grid_x + (i + 1) * cell, grid_y + i * cell
        draw.rectangle([ix, iy, ix + cell - 1, iy + cell - 1], outline=(200, 0, 0))
    draw.text((pad, grid_y + cell * NUM_CLASSES + 8), "rows: true class; outlined: correct", fill=_FG, font=small)
    x = grid_x + cell * NUM_LABELS + pad + pad
    for k, c in enumerate(CLASSES):
        draw.text((x, grid_y + 20 * k), f"{c.id:>2} {c.display}", fill=_FG, font=font)
    return _save(img, out_path)
