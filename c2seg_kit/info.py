"""`c2seg info`: what is in a C2Seg data folder, computed by streaming over every pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from c2seg_kit.classes import NUM_LABELS
from c2seg_kit.errors import DatasetNotFoundError
from c2seg_kit.io.scene import open_city
from c2seg_kit.io.tiles import SPLITS, TileSplit, find_tile_root
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


def tile_info(root: Path, progress=None) -> dict:
    """Per split of a challenge tile folder: tile count and size, bands, dtypes, non-finite counts, labels."""
    out = {}
    for role, split in zip(("source", "target"), SPLITS, strict=True):
        if not (root / split).is_dir():
            continue
        tiles = TileSplit(root, split)
        mods = {m: {"bands": None, "dtype": None, **_stats_init()} for m in MODALITIES}
        hist = np.zeros(NUM_LABELS, dtype=np.int64)
        sizes = set()
        for tile_id in tiles.ids:
            arrays, label = tiles.read_tile(tile_id)
            for m, a in arrays.items():
                mods[m]["bands"], mods[m]["dtype"] = a.shape[0], str(a.dtype)
                _stats_add(mods[m], a)
            sizes.add(arrays["msi"].shape[1:])
            if label is not None:
                from c2seg_kit.io.scene import check_label_values

                check_label_values(label, f"label tile {tile_id}")
                hist += np.bincount(label.ravel().astype(np.int64), minlength=NUM_LABELS)
        out[split] = {
            "role": role,
            "layout": "tiles",
            "tiles": len(tiles.ids),
            "tile_shapes": sorted(list(s) for s in sizes),
            "modalities": mods,
            "label_histogram": hist.tolist() if tiles.has_label else None,
        }
    return out


def data_info(data_dir: str | Path, track: Track, progress=None) -> dict:
    """Info for whichever layout `data_dir` holds (scene files first, then challenge tiles)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetNotFoundError(f"data folder {data_dir} does not exist")
    if (data_dir / track.source.scene_file).is_file() or (data_dir / track.target.scene_file).is_file():
        return city_info(data_dir, track, progress)
    root = find_tile_root(data_dir, track)
    if root is not None:
        return tile_info(root, progress)
    raise DatasetNotFoundError(
        f"no C2Seg {track.name} data in {data_dir}: expected scene files "
        f"{track.source.scene_file} and {track.target.scene_file}, or tiles under {track.tile_dir}/train/msi"
    )
