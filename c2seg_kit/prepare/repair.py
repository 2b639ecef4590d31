"""NaN/inf repair: the one rule `c2seg prepare` (scenes and tiles) and the tile datasets apply."""

from __future__ import annotations

import warnings

import numpy as np


def repair_nonfinite(block: np.ndarray) -> int:
    """Replace non-finite values of an (h, w, C) block in place; returns how many.

    Each becomes the mean of its finite 4-neighbours (as the reference patches Beijing's SAR);
    where none is finite, the mean of the block's finite values in that band (0 if the band
    has none).
    """
    bad = ~np.isfinite(block)
    n = int(np.count_nonzero(bad))
    if not n:
        return 0
    with warnings.catch_warnings():  # a band with no finite value at all: "mean of empty slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        fallback = np.nan_to_num(np.nanmean(np.where(bad, np.nan, block).reshape(-1, block.shape[-1]), axis=0))
    finite = np.where(bad, 0.0, block).astype(np.float64)
    ok = (~bad).astype(np.float64)
    total = np.zeros_like(finite)
    count = np.zeros_like(ok)
    for axis in (0, 1):
        for shift in (1, -1):
            sl_dst = [slice(None)] * 3
            sl_src = [slice(None)] * 3
            sl_dst[axis] = slice(1, None) if shift == 1 else slice(None, -1)
            sl_src[axis] = slice(None, -1) if shift == 1 else slice(1, None)
            total[tuple(sl_dst)] += finite[tuple(sl_src)]
            count[tuple(sl_dst)] += ok[tuple(sl_src)]
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    fill = np.where(count > 0, mean, np.broadcast_to(fallback, block.shape))
    block[bad] = fill[bad].astype(block.dtype)
    return n


def repaired_hwc(chw: np.ndarray) -> tuple[np.ndarray, int]:
    """A (C, h, w) array as a repaired float32 (h, w, C) block, and how many values were repaired.

    The block is a copy unless ``chw`` already is float32 laid out pixel by pixel (then the
    repair happens in ``chw`` itself).
    """
    hwc = np.ascontiguousarray(chw.transpose(1, 2, 0), dtype=np.float32)
    return hwc, repair_nonfinite(hwc)
