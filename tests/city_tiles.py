"""A tiny challenge tile set whose HSI has a known principal structure, and the oracles over it.

The tiles of one city are cut from spectra drawn for the whole city at once
(tests/pca_oracle.py), so the city's PCA is well defined; they are written the GDAL way
(tests/tile_support.py) with georeferencing. The oracles load every tile in memory, as the
kit never does, and compute what prepare must produce: the authors' PCA over all tiles in id
order, the per-city min-max, the NaN repair within each tile (a naive loop).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pca_oracle import authors_pca, structured_spectra
from tile_support import write_gdal

HSI_BANDS = 24
#: (H, W) per tile id "0", "1", ...: eleven train tiles so that "10" sorts after "9"; sizes differ.
SIZES = {"train": [(12, 12)] * 7 + [(8, 12)] + [(12, 12)] * 3, "test": [(12, 12), (12, 12), (12, 8), (12, 12)]}


def make_city_tiles(root: Path, seed: int = 0, sizes=None, nested_hsi: bool = False) -> dict:
    """``root`` (C2Seg_XX) with train and test tiles; returns {(split, id): {modality: array}}."""
    sizes = sizes or SIZES
    rng = np.random.default_rng(seed)
    written = {}
    for split, shapes in sizes.items():
        n = sum(h * w for h, w in shapes)
        spectra = np.rint(structured_spectra(rng, n, HSI_BANDS, offset=3000, scale=600)).astype(np.int16)
        at = 0
        for i, (h, w) in enumerate(shapes):
            hsi = spectra[at : at + h * w].reshape(h, w, HSI_BANDS).transpose(2, 0, 1)
            at += h * w
            arrays = {"hsi": np.ascontiguousarray(hsi),
                      "msi": rng.integers(0, 4000, (4, h, w)).astype(np.uint16),
                      "sar": rng.normal(-12, 4, (2, h, w)).astype(np.float32)}
            arrays["sar"][0, i % h, (2 * i) % w] = np.nan  # a lone NaN (4-neighbour mean)
            if i == 2:
                arrays["sar"][1, :2, :2] = np.nan  # a NaN whose neighbours are NaN too: the band mean
            if split == "train":
                arrays["label"] = rng.integers(0, 14, (h, w)).astype(np.uint8)
            for m, a in arrays.items():
                folder = root / split / m / m if (nested_hsi and m == "hsi" and split == "train") else root / split / m
                write_gdal(folder / f"{i}.tiff", a, origin=(600000.0 + 1000 * i, 5300000.0 - 10 * i))
            written[(split, str(i))] = arrays
    return written


def repair_naive(chw: np.ndarray) -> np.ndarray:
    """The repair rule with loops: a non-finite value takes the mean of its finite 4-neighbours
    in the tile, else the mean of the tile's finite values in that band."""
    x = chw.astype(np.float64)
    out = x.copy()
    c, h, w = x.shape
    for b, r, q in zip(*np.nonzero(~np.isfinite(x)), strict=True):
        near = [x[b, rr, qq] for rr, qq in ((r - 1, q), (r + 1, q), (r, q - 1), (r, q + 1))
                if 0 <= rr < h and 0 <= qq < w and np.isfinite(x[b, rr, qq])]
        out[b, r, q] = np.mean(near) if near else x[b][np.isfinite(x[b])].mean()
    return out


def city_oracle(written: dict, split: str, k: int = 10) -> dict:
    """What the prepared city must hold: {"components": (k, C), modality: {id: normalised (C, h, w)}}."""
    ids = sorted({i for s, i in written if s == split}, key=int)
    pixels = np.concatenate([written[(split, i)]["hsi"].reshape(HSI_BANDS, -1).T for i in ids])
    comps = authors_pca(pixels, k)
    values = {"hsi": {i: np.einsum("kc,chw->khw", comps, written[(split, i)]["hsi"].astype(np.float64)) for i in ids}}
    for m in ("msi", "sar"):
        values[m] = {i: repair_naive(written[(split, i)][m]) for i in ids}
    out = {"components": comps, "ids": ids, "raw": values}
    for m, per_tile in values.items():
        lo = np.min([a.min(axis=(1, 2)) for a in per_tile.values()], axis=0)[:, None, None]
        hi = np.max([a.max(axis=(1, 2)) for a in per_tile.values()], axis=0)[:, None, None]
        out[m] = {i: (a - lo) / (hi - lo) for i, a in per_tile.items()}
    return out
