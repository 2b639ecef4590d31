"""A synthetic challenge tile distribution: the scene synth's cities, cut as the organizers cut theirs.

``c2seg synth OUT --track AB|BW --layout tiles`` writes ``OUT/C2Seg_XX/`` in the challenge's tile
layout (docs/data.md; ``train/{hsi,msi,sar,label}/<id>.tiff``, ``test/{hsi,msi,sar}/<id>.tiff``,
BW's train HSI one folder deeper in ``train/hsi/hsi/``) and ``OUT/labels.h5``, the test tiles'
labels in the tile layout (docs/formats.md).

The cities are those of :mod:`c2seg_kit.synth.scenes` for the same track, scale and seed (same
classes, spectra, cross-city shift, same noise): a tile equals the matching window of the scene
synth's city, integer-scaled. What the tiles add, as in the real distribution:

- The grid (an inference, not stated anywhere): windows of a fixed size stepping by a fixed
  stride, the last row and column snapped to the city's edge, so edge tiles overlap their
  neighbours. These reproduce the distributed counts exactly (at the nominal city sizes):
  Augsburg (train) 128 px, stride 64: 13 x 21 = 273 tiles; Berlin (test) 128 px, stride 128:
  20 x 7 = 140; Beijing (train) 256 px, stride 128: 105 x 68 = 7140; Wuhan (test) 256 px,
  stride 256: 25 x 34 = 850. With ``--scale`` the cities shrink and the tiles keep their size,
  except that a tile is never more than half the city's shorter side (so every split keeps at
  least a 2 x 2 grid); the stride shrinks in proportion.
- Tile ids: 0-based integers, numbered per split ("0", "1", ...), as the winners' file lists
  show (``C2Seg_AB/train/msi/0.tiff`` ... ``272.tiff``); that they follow the grid in row-major
  order is our choice, not something those lists reveal.
- Values: HSI int16 and MSI uint16 reflectance x 10000 (rounded, clipped to the type), SAR
  float32 dB with its NaN pixels, labels uint8. The HSI is on the 10 m grid in every tile
  (BW's 30 m HSI repeated 3 x 3, as the reference upsamples it).
- Files: GeoTIFFs written as GDAL writes them by default (pixel-interleaved), with a plausible
  WGS 84 / UTM georeferencing per city at 10 m (:data:`CITY_UTM`).

Memory stays flat in the city's height: rows are generated in the scene synth's bands and
only the rows that open tile rows still need are kept, each modality on its own grid (BW's
HSI at 30 m). The whole distribution is built in a temporary folder inside OUT and renamed to
``C2Seg_XX`` when complete; labels.h5 appears only when complete too.
"""

from __future__ import annotations

import shutil
from collections import deque
from pathlib import Path

import numpy as np

from c2seg_kit.io.geotiff import GeoRef, write_geotiff
from c2seg_kit.outputs import claim_file, claim_folder, publish_folder, temp_dir_in
from c2seg_kit.registry import City, Track
from c2seg_kit.synth.scenes import CitySynth, band_rows, band_starts, build_cities
from c2seg_kit.tiling import window_origins

#: Full-size (tile, stride) per city: the grid that reproduces the distributed tile counts.
TILE_GRID = {"augsburg": (128, 64), "berlin": (128, 128), "beijing": (256, 128), "wuhan": (256, 256)}
#: A plausible placement per city: EPSG code (WGS 84 / UTM zone) and the upper-left corner (m).
CITY_UTM = {"augsburg": (32632, 636000.0, 5366000.0), "berlin": (32633, 378000.0, 5831000.0),
            "beijing": (32650, 425000.0, 4450000.0), "wuhan": (32650, 215000.0, 3415000.0)}
PIXEL_M = 10.0
REFLECTANCE_SCALE = 10000
TILE_DTYPES = {"hsi": np.dtype(np.int16), "msi": np.dtype(np.uint16), "sar": np.dtype(np.float32)}
SPLIT_OF_ROLE = {"source": "train", "target": "test"}
#: Folders that sit one level deeper than the others, per track and split (BW's train HSI, as distributed).
NESTED = {("BW", "train", "hsi")}
SUFFIX = ".tiff"
#: What a refusal of an existing output says (synth has no --force).
NO_OVERWRITE = "synth does not overwrite files: choose another OUT_DIR"


def tile_grid(city: City, shape: tuple[int, int]) -> tuple[int, int]:
    """(tile, stride) for a city of this (scaled) shape; see the module docstring."""
    tile, stride = TILE_GRID[city.name]
    fitted = min(tile, min(shape) // 2)
    return fitted, max(1, stride * fitted // tile)


def tile_plan(shape: tuple[int, int], tile: int, stride: int) -> list[tuple[str, int, int]]:
    """(id, row, col) of every tile: the snapped grid in row-major order, ids 0-based."""
    return [(str(i), r, c) for i, (r, c) in enumerate(window_origins(shape[0], shape[1], tile, stride))]


def folder_of(track: Track, split: str, modality: str) -> str:
    """A modality's folder relative to C2Seg_XX, e.g. ``train/hsi/hsi`` for BW's train HSI."""
    nested = (track.name, split, modality) in NESTED
    return f"{split}/{modality}/{modality}" if nested else f"{split}/{modality}"


def integer_reflectance(refl: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Reflectance x 10000, rounded and clipped to the integer type's range."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(refl * REFLECTANCE_SCALE), info.min, info.max).astype(dtype)


def city_georef(city: City) -> GeoRef:
    epsg, x, y = CITY_UTM[city.name]
    return GeoRef.utm(epsg, x, y, PIXEL_M, f"WGS 84 / UTM zone {epsg % 100}N")


class RowBuffer:
    """Consecutive bands of one modality's rows on its own grid; old bands are dropped."""

    def __init__(self) -> None:
        self.bands: deque[tuple[int, np.ndarray]] = deque()

    def push(self, r0: int, block: np.ndarray) -> None:
        self.bands.append((r0, block))

    def drop_before(self, row: int) -> None:
        while self.bands and self.bands[0][0] + self.bands[0][1].shape[0] <= row:
            self.bands.popleft()

    def rows(self, r0: int, r1: int) -> np.ndarray:
        parts = [b[max(r0 - s, 0) : r1 - s] for s, b in self.bands if s < r1 and s + b.shape[0] > r0]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def cut(block: np.ndarray, block_r0: int, r0: int, c0: int, tile: int, factor: int) -> np.ndarray:
    """A (C, tile, tile) tile from rows on a grid ``factor`` times coarser, repeated to the 10 m grid."""
    n0, n1, m0, m1 = r0 // factor, -(-(r0 + tile) // factor), c0 // factor, -(-(c0 + tile) // factor)
    win = block[n0 - block_r0 : n1 - block_r0, m0:m1]
    if factor > 1:
        win = win.repeat(factor, axis=0).repeat(factor, axis=1)
        win = win[r0 - n0 * factor : r0 - n0 * factor + tile, c0 - m0 * factor : c0 - m0 * factor + tile]
    return win.transpose(2, 0, 1)


def write_city_tiles(gen: CitySynth, root: Path, split: str, progress, label_sink=None) -> int:
    """Generate one city band by band and write its tiles under ``root`` (C2Seg_XX); returns the count.

    The train split gets label tiles; otherwise each tile's label goes to ``label_sink(id, label)``.
    """
    track, h = gen.track, gen.shape[0]
    tile, stride = tile_grid(gen.city, gen.shape)
    plan = tile_plan(gen.shape, tile, stride)
    factors = {"hsi": track.hsi_factor, "msi": 1, "sar": 1, "label": 1}
    kinds = ("hsi", "msi", "sar", "label") if split == "train" else ("hsi", "msi", "sar")
    folders = {m: root / folder_of(track, split, m) for m in kinds}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    georef = city_georef(gen.city)
    buffers = {m: RowBuffer() for m in factors}
    bands = band_starts(h, band_rows(track))
    generated = 0
    for tile_id, r0, c0 in plan:
        while generated < r0 + tile:  # generate bands until this tile row is complete
            b0, b1 = next(bands)
            true, label, bright, illum = gen.cover(b0, b1)
            buffers["hsi"].push(b0 // factors["hsi"], integer_reflectance(gen.hsi(true, bright, illum, b0), TILE_DTYPES["hsi"]))
            buffers["msi"].push(b0, integer_reflectance(gen.msi(true, bright, illum, b0), TILE_DTYPES["msi"]))
            buffers["sar"].push(b0, gen.sar(true, b0))
            buffers["label"].push(b0, label[..., None])
            generated = b1
        tiles = {}
        for m, buf in buffers.items():
            f = factors[m]
            buf.drop_before(r0 // f)
            n0 = r0 // f
            tiles[m] = cut(buf.rows(n0, -(-(r0 + tile) // f)), n0, r0, c0, tile, f)
        for m in kinds:
            write_geotiff(folders[m] / f"{tile_id}{SUFFIX}", tiles[m] if m != "label" else tiles[m][0],
                          georef.window(r0, c0))
        if label_sink is not None:
            label_sink(tile_id, tiles["label"][0])
        progress.update(1)
    return len(plan)


def synthesize_tiles(out_dir: str | Path, track: Track, scale: float = 0.1, seed: int = 0,
                     progress: bool = True) -> dict[str, Path]:
    """Write ``OUT/C2Seg_XX`` (train and test tiles) and ``OUT/labels.h5`` (test labels, tile layout).

    Refuses to touch an existing ``labels.h5`` or a ``C2Seg_XX`` with anything in it in OUT. Returns the written paths
    by role ("tiles", "train", "test", "labels").
    """
    from tqdm.auto import tqdm

    from c2seg_kit.submission.tile_writers import tile_labels_writer

    if not (0 < scale <= 4):
        raise ValueError(f"--scale must be in (0, 4], got {scale}")
    out = Path(out_dir)
    final, labels_path = out / track.tile_dir, out / "labels.h5"
    claim_file(labels_path, force=False, advice=NO_OVERWRITE)
    claim_folder(final, verb="synth", follow_link=False)
    out.mkdir(parents=True, exist_ok=True)
    gens = build_cities(track, scale, seed)
    partial = temp_dir_in(out, prefix=f".{track.tile_dir}.partial-")
    try:
        target = gens[1]
        test_ids = [t[0] for t in tile_plan(target.shape, *tile_grid(target.city, target.shape))]
        with tile_labels_writer(labels_path, track.name, expected_ids=test_ids) as labels:
            for role, gen in zip(("source", "target"), gens, strict=True):
                split = SPLIT_OF_ROLE[role]
                tile, stride = tile_grid(gen.city, gen.shape)
                n = len(tile_plan(gen.shape, tile, stride))
                desc = f"{gen.city.display} {split} {gen.shape[0]}x{gen.shape[1]}, {tile} px tiles"
                with tqdm(total=n, desc=desc, unit="tile", disable=not progress, leave=False) as bar:
                    write_city_tiles(gen, partial, split, bar, labels.write_tile if split == "test" else None)
        try:
            publish_folder(partial, final, verb="synth")
        except BaseException:
            labels_path.unlink(missing_ok=True)  # written by this call a moment ago
            raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # only the folder this call created
        raise
    return {"tiles": final, "train": final / "train", "test": final / "test", "labels": labels_path}
