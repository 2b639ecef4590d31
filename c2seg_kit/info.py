"""`c2seg info`: what is in a C2Seg data folder, tile folder or tile zip, computed by streaming over every pixel."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from c2seg_kit.classes import NUM_LABELS
from c2seg_kit.io.checksums import DISTRIBUTED_MD5, distributed_md5_check
from c2seg_kit.io.locate import locate_data
from c2seg_kit.io.scene import open_city
from c2seg_kit.io.tile_checks import BandCounts, check_sizes
from c2seg_kit.io.tiles import LABEL, SPLIT_ROLES, TileData, TileSplit, open_tiles
from c2seg_kit.registry import MODALITIES, Track

BAND_ROWS = 384
#: A band's range is "dominated by outliers" when its min..max is this many times wider than the
#: range its tiles' 1st..99th percentiles span: min-max scaling then squeezes nearly every pixel
#: into a sliver of [0, 1] (one stray 3e38 makes the whole band a constant).
OUTLIER_RATIO = 100
#: Pixels per tile and band the percentiles are taken from (a regular subsample).
ROBUST_PIXELS = 1024


def _stats_init() -> dict:
    return {"nan": 0, "inf": 0, "min": None, "max": None}


def _stats_add(stats: dict, block: np.ndarray, masked: int = 0) -> None:
    """Add a block's counts and range; ``masked``: of its NaN, how many were nodata pixels."""
    if block.dtype.kind == "f":
        stats["nan"] += int(np.count_nonzero(np.isnan(block))) - masked
        stats["inf"] += int(np.count_nonzero(np.isinf(block)))
        finite = block[np.isfinite(block)]
    else:
        finite = block  # integers: reduced where they lie, without a flattened copy
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        stats["min"] = lo if stats["min"] is None else min(stats["min"], lo)
        stats["max"] = hi if stats["max"] is None else max(stats["max"], hi)


def city_info(data_dir: Path, track: Track, progress=None) -> dict:
    """Per city of a scene-file folder: shape, bands, dtypes, non-finite counts, label histogram."""
    out = {}
    for role, city in zip(("source", "target"), track.cities, strict=True):
        with open_city(data_dir, track, city) as scene:
            mods = {m: {"bands": scene.bands[m], "dtype": str(scene.dtypes.get(m, "")), **_stats_init()} for m in MODALITIES}
            hist = np.zeros(NUM_LABELS, dtype=np.int64)
            for m in MODALITIES:
                rows = scene.native_shape(m)[0]
                step = BAND_ROWS // (scene.factor if m == "hsi" else 1)
                for r0 in range(0, rows, step):
                    _stats_add(mods[m], scene.read_native(m, r0, min(r0 + step, rows)))
                if hasattr(scene, "release"):
                    scene.release(m)
            if scene.has_label:
                h, w = scene.shape
                for r0 in range(0, h, BAND_ROWS):
                    hist += np.bincount(scene.read_label(r0, min(r0 + BAND_ROWS, h), 0, w).ravel(), minlength=NUM_LABELS)
            out[city.name] = {
                "role": role,
                "layout": "scene",
                "format": "MATLAB v7.3 (HDF5)" if type(scene).__name__ == "MatV73Scene" else "MATLAB v5",
                "shape": list(scene.shape),
                "hsi_grid_factor": scene.factor,
                "modalities": mods,
                "label_histogram": hist.tolist() if scene.has_label else None,
            }
        if progress is not None:
            progress.update(1)
    return out


class BandRanges:
    """Per band of one modality: min and max over every finite value, and the range the tiles'
    1st..99th percentiles span (of a subsample of each tile), to name the bands whose min-max is
    dominated by a few outliers."""

    def __init__(self):
        self.lo = self.hi = self.p_lo = self.p_hi = None

    def add(self, chw: np.ndarray) -> None:
        step = max(1, int(np.sqrt(chw.shape[1] * chw.shape[2] / ROBUST_PIXELS)))
        some = chw[:, ::step, ::step].reshape(chw.shape[0], -1).astype(np.float64)  # a regular grid of pixels
        if chw.dtype.kind == "f":
            some[~np.isfinite(some)] = np.nan
            chw = np.where(np.isfinite(chw), chw, np.nan)
        with warnings.catch_warnings():  # a band with no finite value: "All-NaN slice"
            warnings.simplefilter("ignore", RuntimeWarning)
            if chw.dtype.kind == "f":
                lo, hi = np.nanmin(chw, axis=(1, 2)), np.nanmax(chw, axis=(1, 2))
            else:  # integers: plain reductions, no copy of the tile
                lo, hi = chw.min(axis=(1, 2)), chw.max(axis=(1, 2))
            lo, hi = lo.astype(np.float64), hi.astype(np.float64)
            quantile = np.nanpercentile if np.isnan(some).any() else np.percentile  # the latter is faster
            p_lo, p_hi = quantile(some, (1, 99), axis=1)
        if self.lo is None:
            self.lo, self.hi, self.p_lo, self.p_hi = lo, hi, p_lo, p_hi
            return
        self.lo, self.hi = np.fmin(self.lo, lo), np.fmax(self.hi, hi)
        self.p_lo, self.p_hi = np.fmin(self.p_lo, p_lo), np.fmax(self.p_hi, p_hi)

    def dominated(self) -> list[int]:
        """The bands (0-based) whose min..max is over OUTLIER_RATIO times their percentile range."""
        if self.lo is None:
            return []
        with np.errstate(invalid="ignore", over="ignore"):
            span, robust = self.hi - self.lo, self.p_hi - self.p_lo
            bad = (span > 0) & ~(span <= OUTLIER_RATIO * robust)
        return [int(b) for b in np.flatnonzero(bad & np.isfinite(self.lo))]


def _tile_split_info(split: TileSplit, role: str, city: str, progress: bool) -> dict:
    from tqdm.auto import tqdm

    mods = {m: {"bands": None, "expected_bands": split.track.bands[m] if split.track else None, "dtype": None,
                "nodata": [], "nodata_pixels": 0, **_stats_init()} for m in MODALITIES}
    ranges = {m: BandRanges() for m in MODALITIES}
    band_counts = BandCounts(split.split)
    hist = np.zeros(NUM_LABELS, dtype=np.int64)
    sizes: Counter = Counter()
    epsg, pixel, referenced = set(), set(), 0
    for tile_id in tqdm(split.ids, desc=f"{split.split} ({city})", unit="tile", disable=not progress, leave=False):
        rasters = split.read_rasters(tile_id)
        h, w = check_sizes(tile_id, split.split, {m: r.data for m, r in rasters.items()})
        sizes[f"{h}x{w}"] += 1
        for m in MODALITIES:
            r, s = rasters[m], mods[m]
            a = r.data
            s["bands"] = band_counts.check(m, tile_id, a.shape[0])
            dtypes = set(filter(None, (s["dtype"] or "").split(", "))) | {str(r.file_dtype or a.dtype)}
            s["dtype"] = ", ".join(sorted(dtypes))
            if r.nodata is not None and np.isfinite(r.nodata) and r.nodata not in s["nodata"] and len(s["nodata"]) < 8:
                # (a NaN nodata value marks what is NaN anyway; JSON has no NaN)
                s["nodata"].append(r.nodata)
            s["nodata_pixels"] += r.nodata_pixels
            _stats_add(s, a, r.nodata_pixels)
            ranges[m].add(a)
        if split.has_label:
            hist += np.bincount(rasters[LABEL].data.ravel(), minlength=NUM_LABELS)
        georefs = [r.georef for r in rasters.values() if r.georef is not None]
        referenced += bool(georefs)
        epsg |= {g.epsg for g in georefs if g.epsg is not None}
        pixel |= {g.pixel_size for g in georefs if g.pixel_size is not None}
    for m in MODALITIES:
        mods[m]["outlier_bands"] = ranges[m].dominated()
    return {
        "role": role,
        "layout": "tiles",
        "city": city,
        "tiles": len(split.ids),
        "tile_sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
        "modalities": mods,
        "georef": {"tiles": referenced, "epsg": sorted(epsg), "pixel_size": sorted(list(p) for p in pixel)}
        if referenced else None,
        "label_histogram": hist.tolist() if split.has_label else None,
    }


def tile_info(tiles: TileData, progress: bool = False) -> dict:
    """Per split of a challenge tile distribution: tile count and sizes, bands, dtypes, value ranges,
    non-finite counts, georeferencing and the label histogram (every pixel of every tile read)."""
    out = {}
    for split_name, split in tiles.splits.items():
        role = SPLIT_ROLES[split_name]
        city = getattr(tiles.track, role).display
        out[split_name] = _tile_split_info(split, role, city, progress)
    return out


def archive_info(path: Path, progress: bool = False) -> dict:
    """A zip's own facts: its name, and for a distributed name whether its MD5 matches the record."""
    from tqdm.auto import tqdm

    result: dict = {"path": str(path)}
    if path.name in DISTRIBUTED_MD5:
        with tqdm(total=path.stat().st_size, desc=f"MD5 {path.name}", unit="B", unit_scale=True,
                  disable=not progress, leave=False) as bar:
            result.update(distributed_md5_check(path, bar))
    return result


def data_info(data_dir: str | Path, track: Track, progress: bool = False) -> dict:
    """Info for whichever layout `data_dir` holds: scene files, a tile folder, or the tile zip.

    Scene and tile layouts give one entry per city (scene: keyed by city name; tiles: by split).
    A zip adds an ``archive`` entry (see :func:`archive_info`).
    """
    where = locate_data(data_dir, track)
    if where.layout == "scene":
        return city_info(where.path, track)
    with open_tiles(where.path, track) as tiles:
        archive = {"archive": archive_info(where.path, progress)} if where.is_zip else {}
        return {**archive, **tile_info(tiles, progress)}
