"""PNG pictures of class maps and confusion matrices, in the official colours (Pillow only).

Large rasters are reduced by nearest-neighbour striding to at most ``max_side`` pixels on the
long side: class maps must keep exact class colours, so no interpolation blends them.
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

__all__ = ["DEFAULT_MAX_SIDE", "render_confusion_png", "render_png", "render_rows_png"]

DEFAULT_MAX_SIDE = 2048
_BG = (255, 255, 255)
_FG = (0, 0, 0)


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable built-in font
    except TypeError:  # pragma: no cover - older Pillow
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: Any) -> int:
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0]


def _stride(shape: tuple[int, int], max_side: int) -> int:
    return max(1, math.ceil(max(shape) / max(1, max_side)))


def _map_image(classes: np.ndarray) -> Image.Image:
    """uint8 class ids 0..13 -> RGB image through a palette (no per-pixel Python work)."""
    img = Image.fromarray(np.ascontiguousarray(classes, dtype=np.uint8), mode="P")
    flat = [v for rgb in palette() for v in rgb]
    img.putpalette(flat + [0, 0, 0] * (256 - NUM_LABELS))
    return img.convert("RGB")


def _compose(map_img: Image.Image, *, legend: bool, title: str | None, present: set[int] | None) -> Image.Image:
    """Map on the left, optional title above, legend (every class, present ones marked) on the right."""
    font = _font(14)
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
    out = Path(out_path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format="PNG", optimize=False)
    return out


def render_png(array: Any, out_path: str | os.PathLike, *, legend: bool = True, title: str | None = None,
               max_side: int = DEFAULT_MAX_SIDE) -> Path:
    """Write a class map (H x W integers 0..13) as a PNG in the official colours, with a legend."""
    a = as_class_map(array, "class map")
    k = _stride(a.shape, max_side)
    small = a[::k, ::k]
    present = {int(v) for v in np.flatnonzero(np.bincount(small.ravel(), minlength=NUM_LABELS))}
    return _save(_compose(_map_image(small), legend=legend, title=title, present=present), out_path)


def render_rows_png(shape: tuple[int, int], rows: Iterable[tuple[int, np.ndarray]], out_path: str | os.PathLike,
                    *, legend: bool = True, title: str | None = None, max_side: int = DEFAULT_MAX_SIDE) -> Path:
    """Like :func:`render_png` for a raster streamed as ``(r0, uint8 block)`` row blocks (a file
    reader's ``iter_rows``): only the kept rows and columns are ever held in memory."""
    k = _stride(shape, max_side)
    h, w = shape
    small = np.zeros((math.ceil(h / k), math.ceil(w / k)), dtype=np.uint8)
    for r0, block in _strided_rows(rows, k):
        small[r0 // k : r0 // k + block.shape[0]] = block
    present = {int(v) for v in np.flatnonzero(np.bincount(small.ravel(), minlength=NUM_LABELS))}
    return _save(_compose(_map_image(small), legend=legend, title=title, present=present), out_path)


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
    font, small = _font(13), _font(11)
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
