"""C2Seg as PyTorch datasets in TorchGeo's convention, for models of your own.

Two datasets, one sample format::

    from c2seg_baseline.datasets import C2SegTiles
    ds = C2SegTiles("C2Seg_AB.zip", track="AB", split="train", normalise="minmax")
    ds.plot(ds[0]).save("tile0.png")

- :class:`C2SegTiles`: the challenge tiles as distributed (a folder or the zip), one sample per
  tile; raw values, per-sample min-max, or a prepared cache's own preparation (its PCA and
  per-city normalisation) applied on the fly.
- :class:`C2SegPrepared`: a prepared cache (`c2seg prepare`, scene or tile layout), in windows
  placed by :mod:`c2seg_kit.tiling` (tiles: whole tiles by default).

Sample (a dict; the default collate batches it)::

    {"image": {"hsi": FloatTensor (C, H, W), "msi": FloatTensor (4, H, W), "sar": FloatTensor (2, H, W)},
     "mask": LongTensor (H, W),     # 0 = unlabelled, 1..13 the classes; only where labels exist
     "tile": str,                   # the tile id ("" for a window of a scene cache)
     "origin": LongTensor [r0, c0]} # C2SegPrepared only: the window's corner in its raster

The modalities stay separate (they differ in bands and in meaning); concatenate them with
``torch.cat(list(sample["image"].values()))`` where a model wants one tensor. ``transforms``
(a callable taking and returning a sample) runs last, as in TorchGeo.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from c2seg_kit.classes import CLASSES, NUM_LABELS
from c2seg_kit.errors import C2SegError
from c2seg_kit.io.locate import locate_data
from c2seg_kit.io.tiles import SPLIT_ROLES, SPLITS, TileData, open_tiles
from c2seg_kit.prepare.cache import PreparedData, RawTransform
from c2seg_kit.prepare.repair import repaired_hwc
from c2seg_kit.registry import MODALITIES, get_track
from c2seg_kit.render import _font, _map_image  # the class palette and font of `c2seg render`
from c2seg_kit.tiling import window_origins

from .dataset import read_padded

Sample = dict
#: Scene caches are cut into the paper's training windows unless told otherwise (AB 128, BW 256 pixels).
PAPER_WINDOW = {"AB": 128, "BW": 256}
NORMALISE_CHOICES = (None, "minmax")


def _minmax(chw: np.ndarray) -> np.ndarray:
    """Per-band min-max of one (C, H, W) array to float32 [0, 1] (a constant band becomes 0),
    computed in float64: the span of float32 values near +-3.4e38 overflows float32 (NaN samples)."""
    x = chw.astype(np.float64)
    lo = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - lo
    return np.divide(x - lo, span, out=np.zeros_like(x), where=span > 0).astype(np.float32)


class C2SegTiles(Dataset):
    """The challenge tiles of one split, one sample per tile (see the module docstring).

    ``root``: a folder holding ``C2Seg_XX/`` (or that folder itself) or the zip as distributed.
    ``split``: "train" (the source city, labelled) or "test" (the target city, no mask).
    ``normalise``: None (raw values as float32; NaN kept), "minmax" (NaN/inf repaired within
    the tile, then each band scaled to [0, 1] within the sample), or a prepared cache folder
    (or :class:`PreparedData`) of the same track: its repair, PCA (HSI becomes its components)
    and per-city normalisation, so samples equal what the cache holds for the same tile.

    Files are opened lazily in each process (DataLoader workers included). A zip with compressed
    inner zips (BW's train split) has them decompressed once into a temporary folder, shared by
    forked workers; a folder unzipped from it (inner zips left as they are) needs no copy at all.
    """

    def __init__(self, root: str | Path, track: str = "AB", split: str = "train",
                 normalise: str | Path | PreparedData | None = None,
                 transforms: Callable[[Sample], Sample] | None = None):
        self.track = get_track(track)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        where = locate_data(root, self.track)
        if where.layout != "tiles":
            raise C2SegError(f"{root} holds scene files, not challenge tiles; use C2SegPrepared on a prepared cache")
        self.path, self.split = where.path, split
        self.transforms = transforms
        self.normalise = normalise
        self._transform = self._prepared_transform(normalise)
        self._tiles: TileData | None = None
        self._pid: int | None = None
        split_data = self._split()
        self.ids: list[str] = list(split_data.ids)
        self.has_label = split_data.has_label

    def _prepared_transform(self, normalise) -> RawTransform | None:
        if normalise in NORMALISE_CHOICES:
            return None
        data = normalise if isinstance(normalise, PreparedData) else PreparedData(normalise)
        if data.track.name != self.track.name:
            raise C2SegError(f"{data.root} is prepared for track {data.track.name}, not {self.track.name}")
        return data.city(SPLIT_ROLES[self.split]).transform()

    def _split(self):
        if self._tiles is None or self._pid != os.getpid():
            self._tiles = open_tiles(self.path, self.track)
            self._pid = os.getpid()
            weakref.finalize(self, self._tiles.close)  # an inner-zip copy is removed with the dataset
        if self.split not in self._tiles.splits:
            raise C2SegError(f"no {self.split} split in {self.path}")
        return self._tiles.splits[self.split]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_tiles"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, tile_id: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """One tile as numpy arrays, normalised as configured."""
        arrays, label = self._split().read_tile(tile_id)
        if self._transform is not None:
            arrays = self._transform(arrays)
        elif self.normalise == "minmax":
            arrays = {m: _minmax(repaired_hwc(a)[0].transpose(2, 0, 1)) for m, a in arrays.items()}
        else:
            arrays = {m: a.astype(np.float32) for m, a in arrays.items()}
        return arrays, label

    def __getitem__(self, index: int) -> Sample:
        tile_id = self.ids[index]
        arrays, label = self.read(tile_id)
        sample: Sample = {"image": {m: torch.from_numpy(np.ascontiguousarray(arrays[m])) for m in MODALITIES}}
        if label is not None:
            sample["mask"] = torch.from_numpy(label.astype(np.int64))
        sample["tile"] = tile_id
        return self.transforms(sample) if self.transforms is not None else sample

    def plot(self, sample: Sample, **kwargs) -> Image.Image:
        return plot(sample, **kwargs)

    def close(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
            self._tiles = None


class C2SegPrepared(Dataset):
    """Windows of one city of a prepared cache (scene or tile layout).

    ``city``: "source", "target" or a city name. ``window``: the window edge; default: whole
    tiles for a tile cache, the paper's training window (AB 128, BW 256) for a scene cache.
    ``stride``: default ``window`` (every pixel once; the last window snapped to the edge). A
    raster smaller than the window is zero-padded (mask 0, ignored). Values are the cache's
    normalised ones (in [0, 1]).
    """

    def __init__(self, root: str | Path | PreparedData, city: str = "source", window: int | None = None,
                 stride: int | None = None, transforms: Callable[[Sample], Sample] | None = None):
        self.data = root if isinstance(root, PreparedData) else PreparedData(root)
        self.city = self.data.city(city)
        self.transforms = transforms
        if window is None and self.data.layout == "scene":
            window = PAPER_WINDOW[self.data.track.name]
        if window is not None and (window < 1 or (stride is not None and stride < 1)):
            raise ValueError("window and stride must be positive")
        self.window = window
        self.items: list[tuple[str | None, int, int, int, int]] = []  # (tile, r0, c0, win_h, win_w)
        for tile_id, raster in self.city.rasters():
            wh, ww = (window, window) if window is not None else raster.shape
            step = stride or window
            origins = window_origins(*raster.shape, window, step) if window is not None else [(0, 0)]
            self.items += [(tile_id, r0, c0, wh, ww) for r0, c0 in origins]

    def __len__(self) -> int:
        return len(self.items)

    def _raster(self, tile_id: str | None):
        return self.city if tile_id is None else self.city.tile(tile_id)

    def __getitem__(self, index: int) -> Sample:
        tile_id, r0, c0, wh, ww = self.items[index]
        raster = self._raster(tile_id)
        arrays, label = read_padded(raster, r0, c0, wh, ww)
        sample: Sample = {"image": {m: torch.from_numpy(arrays[m]) for m in MODALITIES}}
        if raster.has_label:
            sample["mask"] = torch.from_numpy(label.astype(np.int64))
        sample["tile"] = tile_id or ""
        sample["origin"] = torch.tensor([r0, c0], dtype=torch.int64)
        return self.transforms(sample) if self.transforms is not None else sample

    def plot(self, sample: Sample, **kwargs) -> Image.Image:
        return plot(sample, **kwargs)


# --- plot ---

PAD, HEAD, LINE, SWATCH, LEGEND_WIDTH = 8, 18, 18, 12, 300
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def false_colour(chw: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) uint8 from the first three channels (fewer are repeated), each
    stretched between its 2nd and 98th percentile (non-finite values shown black)."""
    chans = [chw[i % chw.shape[0]].astype(np.float64) for i in range(3)]
    out = []
    for c in chans:
        finite = c[np.isfinite(c)]
        lo, hi = np.percentile(finite, (2, 98)) if finite.size else (0.0, 1.0)
        scaled = np.clip((np.nan_to_num(c, nan=lo, posinf=lo, neginf=lo) - lo) / max(hi - lo, 1e-12), 0, 1)
        out.append(np.where(np.isfinite(c), scaled, 0.0))
    return np.rint(np.stack(out, axis=-1) * 255).astype(np.uint8)


def plot_layout(shape: tuple[int, int], panels: int, scale: int, title: bool = False) -> list[tuple[int, int]]:
    """Top-left corner of each panel of :func:`plot` (left to right, one row)."""
    h, w = shape
    top = PAD + (LINE if title else 0) + HEAD
    return [(PAD + i * (w * scale + PAD), top) for i in range(panels)]


def plot(sample: Sample, *, scale: int | None = None, title: str | None = None) -> Image.Image:
    """A picture of one sample: each modality in false colour, the mask (and a "prediction",
    when the sample has one) in the class colours, and a legend of the classes present.

    Panels are the sample's size times ``scale`` (default: enough to make the long side about
    256 px), nearest-neighbour, so class colours stay exact; :func:`plot_layout` says where
    each panel lies. Returns a Pillow RGB image.
    """
    image = {m: _numpy(x) for m, x in sample["image"].items()}
    maps = {k: _numpy(sample[k]).astype(np.int64) for k in ("mask", "prediction") if k in sample}
    h, w = next(iter(image.values())).shape[-2:]
    for key, a in maps.items():
        if a.shape != (h, w) or a.min(initial=0) < 0 or a.max(initial=0) >= NUM_LABELS:
            raise ValueError(f"{key} must be an {h} x {w} map of classes 0..{NUM_LABELS - 1}")
    s = scale or max(1, round(256 / max(h, w)))
    panels = [(m.upper(), Image.fromarray(false_colour(a))) for m, a in image.items()]
    panels += [(k, _map_image(a.astype(np.uint8))) for k, a in maps.items()]
    present = sorted({int(v) for a in maps.values() for v in np.unique(a)})
    font = _font(13)
    corners = plot_layout((h, w), len(panels), s, title=bool(title))
    top = corners[0][1]
    legend_x = corners[-1][0] + w * s + PAD
    width = legend_x + (LEGEND_WIDTH + PAD if present else 0)
    height = top + max(h * s, LINE * len(present)) + PAD
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((PAD, PAD), title, fill=BLACK, font=font)
    for (name, panel), (x, y) in zip(panels, corners, strict=True):
        draw.text((x, y - HEAD), name, fill=BLACK, font=font)
        canvas.paste(panel.resize((w * s, h * s), Image.NEAREST), (x, y))
    for i, cid in enumerate(present):
        y = top + i * LINE
        draw.rectangle([legend_x, y + 2, legend_x + SWATCH, y + 2 + SWATCH], fill=CLASSES[cid].rgb, outline=BLACK)
        draw.text((legend_x + SWATCH + 6, y), f"{cid:>2} {CLASSES[cid].display}", fill=BLACK, font=font)
    return canvas


__all__ = ["PAPER_WINDOW", "C2SegPrepared", "C2SegTiles", "false_colour", "plot", "plot_layout"]
