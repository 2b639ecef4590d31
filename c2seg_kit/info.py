"""`c2seg info`: what is in a C2Seg data folder, tile folder or tile zip, computed by streaming over every pixel."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from c2seg_kit.classes import NUM_LABELS
from c2seg_kit.io.locate import locate_data
from c2seg_kit.io.scene import open_city
from c2seg_kit.io.tiles import (
    DISTRIBUTED_MD5,
    LABEL,
    SPLIT_ROLES,
    BandCounts,
    TileData,
    TileSplit,
    check_sizes,
    distributed_md5_check,
    open_tiles,
)
from c2seg_kit.registry import MODALITIES, Track

BAND_ROWS = 384


def _stats_init() -> dict:
    return {"nan": 0, "inf": 0, "min": None, "max": None}


def _stats_add(stats: dict, block: np.ndarray) -> None:
    if block.dtype.kind == "f":
        stats["nan"] += int(np.count_nonzero(np.isnan(block)))
        stats["inf"] += int(np.count_nonzero(np.isinf(block)))
        finite = block[np.isfinite(block)]
    else:
        finite = block.ravel()
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


def _tile_split_info(split: TileSplit, role: str, city: str, progress: bool) -> dict:
    from tqdm.auto import tqdm

    mods = {m: {"bands": None, "dtype": None, **_stats_init()} for m in MODALITIES}
    band_counts = BandCounts(split.split)
    hist = np.zeros(NUM_LABELS, dtype=np.int64)
    sizes: Counter = Counter()
    epsg, pixel, referenced = set(), set(), 0
    kinds = (*MODALITIES, LABEL) if split.has_label else MODALITIES
    for tile_id in tqdm(split.ids, desc=f"{split.split} ({city})", unit="tile", disable=not progress, leave=False):
        rasters = {m: split.read_raster(m, tile_id) for m in kinds}
        h, w = check_sizes(tile_id, split.split, {m: r.data for m, r in rasters.items()})
        sizes[f"{h}x{w}"] += 1
        for m in MODALITIES:
            a, s = rasters[m].data, mods[m]
            s["bands"] = band_counts.check(m, tile_id, a.shape[0])
            dtypes = set(filter(None, (s["dtype"] or "").split(", "))) | {str(a.dtype)}
            s["dtype"] = ", ".join(sorted(dtypes))
            _stats_add(s, a)
        if split.has_label:
            hist += np.bincount(rasters[LABEL].data.ravel(), minlength=NUM_LABELS)
        georefs = [r.georef for r in rasters.values() if r.georef is not None]
        referenced += bool(georefs)
        epsg |= {g.epsg for g in georefs if g.epsg is not None}
        pixel |= {g.pixel_size for g in georefs if g.pixel_size is not None}
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
