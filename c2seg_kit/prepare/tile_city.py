"""`c2seg prepare` on challenge tiles: one split (= one city) streamed tile by tile into ``<city>.h5``.

The same steps as on scenes (:mod:`c2seg_kit.prepare.scene_city`), fitted per city over all its
tiles, with one tile in memory at a time:

1. the PCA fit: every tile's HSI pixels (finite ones) into float64 moments, or a seeded sample;
2. the write pass: each tile's modalities read and checked (sizes agree, band counts equal
   across tiles, labels 0..13), NaN/inf repaired within the tile (no neighbour across tile
   edges) and counted, HSI projected, per-band statistics, one group per tile written; every
   HSI pixel's scores watched for the authors' sign rule, in tile id order and row-major
   order within a tile;
3. the sign pass: flipped components negated in place, tile by tile.

Overlapping edge tiles (the distributed grid snaps its last row and column to the scene's
edge) are not de-duplicated: a pixel lying in two tiles counts twice, once per tile, in the
PCA, the statistics and the repair counts. The tiles do not say where they lie in the scene.

Cache file (``PreparedTiles`` reads it): root attributes ``city``, ``layout = "tiles"``,
``normalisation`` and per modality ``norm_lo_<m>`` / ``norm_hi_<m>``; datasets ``tile_ids``
(natural order) and ``tile_shapes`` (N x 2), ``pca_mean``, ``pca_components``; one group
``tiles/<id>`` per tile with datasets ``hsi``, ``msi``, ``sar`` (C x h x w float32) and
``label`` (h x w uint8, labelled splits only), and the attribute ``georef`` (JSON of
:class:`c2seg_kit.io.geotiff.GeoRef`) when the tile had georeferencing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from c2seg_kit.errors import InvalidDataError
from c2seg_kit.io.tile_checks import BandCounts, check_sizes
from c2seg_kit.io.tiles import LABEL, TileSplit
from c2seg_kit.prepare.cache import georef_json
from c2seg_kit.prepare.pca import PCA, ExtremeScores
from c2seg_kit.prepare.repair import repaired_hwc
from c2seg_kit.prepare.steps import (
    AuthorsStream,
    BandStats,
    CityReport,
    FitStream,
    PrepareOptions,
    finite_rows,
    flip_channels,
    pca_report,
    write_pca,
)
from c2seg_kit.registry import MODALITIES

TILES_GROUP = "tiles"


def pixels_of(chw: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H * W, C) in row-major pixel order (no copy for pixel-interleaved tiles)."""
    return chw.transpose(1, 2, 0).reshape(-1, chw.shape[0])


def fit_tile_pca(split: TileSplit, options: PrepareOptions, progress=None, authors: AuthorsStream | None = None) -> PCA:
    """The HSI PCA of one split's city (provisional signs), over every tile's finite pixels or a sample;
    with ``authors``, the authors' randomized solver over every finite pixel of the tiles in id order
    (every tile read once per pass)."""
    bands = BandCounts(split.split)
    if authors is not None and split.ids:
        first = split.read("hsi", split.ids[0])
        h, w = first.shape[1:]

        def blocks():
            for tile_id in split.ids:
                hsi = split.read("hsi", tile_id)
                bands.check("hsi", tile_id, hsi.shape[0])
                yield finite_rows(pixels_of(hsi))

        return authors.fit(blocks, first.shape[0], len(split.ids) * h * w, first.dtype, options, progress,
                           per_block=lambda n: 1)
    stream: FitStream | None = None
    for tile_id in split.ids:
        hsi = split.read("hsi", tile_id)
        bands.check("hsi", tile_id, hsi.shape[0])
        stream = stream or FitStream(hsi.shape[0], options)
        stream.add(pixels_of(hsi))
        if progress is not None:
            progress.update(1)
    return stream.fit()


class TileCityWriter:
    """Streams one split into a tile cache file (see the module docstring)."""

    def __init__(self, split: TileSplit, f: h5py.File, pca: PCA, options: PrepareOptions, orient: bool):
        self.split, self.f, self.pca, self.options, self.orient = split, f, pca, options, orient
        self.k = pca.components.shape[1]
        self.kinds = (*MODALITIES, LABEL) if split.has_label else MODALITIES
        self.bands = BandCounts(split.split)
        self.stats: dict[str, BandStats] = {}
        self.counts = dict.fromkeys(MODALITIES, 0)
        self.extremes = ExtremeScores(self.k)
        self.sizes: Counter = Counter()
        self.shapes: list[tuple[int, int]] = []
        self.tiles = f.create_group(TILES_GROUP)

    def _stats(self, m: str, channels: int) -> BandStats:
        if m not in self.stats:
            self.stats[m] = BandStats(channels, self.options, MODALITIES.index(m))
        return self.stats[m]

    def _hsi(self, tile_id: str, chw: np.ndarray) -> np.ndarray:
        """Repaired, projected HSI of one tile as (k, h, w) float32; the scores go to the sign rule."""
        if chw.shape[0] != len(self.pca.mean):
            raise _band_mismatch(self.split.split, tile_id, chw.shape[0], len(self.pca.mean))
        h, w = chw.shape[1:]
        if chw.dtype.kind == "f":
            block, repaired = repaired_hwc(chw)
            self.counts["hsi"] += repaired
            pixels = block.reshape(-1, block.shape[-1])
        else:  # integer tiles: nothing to repair, and no float32 copy of all the bands
            pixels = pixels_of(chw)
        scores = self.pca.scores(pixels)
        if self.orient:
            self.extremes.update(scores, w, tile=tile_id)
        return scores.astype(np.float32).reshape(self.k, h, w)

    def add(self, tile_id: str) -> None:
        rasters = self.split.read_rasters(tile_id, self.kinds)
        h, w = check_sizes(tile_id, self.split.split, {m: r.data for m, r in rasters.items()})
        group = self.tiles.create_group(tile_id)
        for m in MODALITIES:
            chw = rasters[m].data
            self.bands.check(m, tile_id, chw.shape[0])
            if m == "hsi":
                block = self._hsi(tile_id, chw)
            else:
                hwc, repaired = repaired_hwc(chw)
                self.counts[m] += repaired
                block = np.ascontiguousarray(hwc.transpose(2, 0, 1))
            self._stats(m, block.shape[0]).add(block)
            group.create_dataset(m, data=block)
        if LABEL in rasters:
            group.create_dataset(LABEL, data=rasters[LABEL].data)
        # the MSI tile's georeferencing, else any other modality's (they share the grid)
        georef = next((r.georef for r in sorted(rasters.values(), key=lambda r: r is not rasters["msi"])
                       if r.georef is not None), None)
        if georef is not None:
            group.attrs["georef"] = georef_json(georef)
        self.sizes[f"{h}x{w}"] += 1
        self.shapes.append((h, w))

    def finish(self) -> tuple[CityReport, PCA]:
        f, ids = self.f, self.split.ids
        signs = self.extremes.signs() if self.orient and not self.pca.signed else np.ones(self.k)
        if (signs < 0).any():  # the sign pass: the projected HSI is small next to the raw HSI read twice
            for tile_id, (h, _) in zip(ids, self.shapes, strict=True):
                flip_channels(self.tiles[tile_id]["hsi"], signs, max(h, 1))  # a tile in one step
        f.attrs["normalisation"] = self.options.normalisation
        for m in MODALITIES:
            lo, hi = self.stats[m].finish(signs if m == "hsi" else None)
            f.attrs[f"norm_lo_{m}"], f.attrs[f"norm_hi_{m}"] = lo, hi
        f.create_dataset("tile_ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("tile_shapes", data=np.array(self.shapes, dtype=np.int64).reshape(-1, 2))
        final = self.pca.oriented(signs)
        write_pca(f, final)
        report = CityReport(tiles=len(ids), tile_sizes=dict(self.sizes.most_common()), has_label=self.split.has_label,
                            nonfinite_repaired=self.counts, **pca_report(self.pca, self.extremes, self.orient))
        return report, final


def _band_mismatch(split: str, tile_id: str, bands: int, fitted: int) -> InvalidDataError:
    return InvalidDataError(f"{split}: tile {tile_id} has {bands} HSI bands, the PCA was fitted on {fitted} "
                            "(--pca-fit source needs the same HSI bands in both splits)")


def prepare_tile_city(split: TileSplit, name: str, out_path: Path, pca: PCA, options: PrepareOptions, *,
                      orient: bool = True, progress=None) -> tuple[CityReport, PCA]:
    """Write one split's city to ``out_path``; returns the report and the PCA with its final signs."""
    with h5py.File(out_path, "w") as f:
        f.attrs["city"], f.attrs["layout"] = name, "tiles"
        writer = TileCityWriter(split, f, pca, options, orient)
        for tile_id in split.ids:
            writer.add(tile_id)
            if progress is not None:
                progress.update(1)
        return writer.finish()
