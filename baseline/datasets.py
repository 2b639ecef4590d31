"""C2Seg as PyTorch datasets in TorchGeo's convention, for models of your own.

Two datasets, one sample format::

    from c2seg_baseline.datasets import C2SegTiles
    ds = C2SegTiles("C2Seg_AB.zip", split="train", track="AB", normalise="minmax")
    ds.plot(ds[0]).savefig("tile0.png")      # a matplotlib Figure (ds.picture(...): a Pillow image)

- :class:`C2SegTiles`: the challenge tiles as distributed (a folder or the zip), one sample per
  tile; raw values, per-sample min-max, or a prepared cache's own preparation (its PCA and
  per-city normalisation) applied on the fly.
- :class:`C2SegPrepared`: a prepared cache (`c2seg prepare`, scene or tile layout), in windows
  placed by :mod:`c2seg_kit.tiling` (tiles: whole tiles by default). The baseline trains on it.

Sample (a flat dict; the default collate batches it; TorchGeo's and kornia's augmentations take
``image`` and ``mask`` as they are)::

    {"image": FloatTensor (C, H, W),  # the modalities stacked in `modalities` order (default hsi, msi, sar)
     "mask": LongTensor (H, W),       # 0 = unlabelled, 1..13 the classes; only where labels exist
     "tile": str,                     # the tile id ("" for a window of a scene cache)
     "origin": LongTensor [r0, c0]}   # C2SegPrepared only: the window's corner in its raster

``ds.band_names`` names the channels of ``image`` (``hsi_1``..., ``hsi_pc1``... for a prepared
cache's PCA components, ``msi_1``..., ``sar_1``...), ``ds.channels`` counts them per modality
and :func:`split_image` cuts an image (or a batch) back into modalities. ``transforms`` (a
callable taking and returning a sample) runs last, as in TorchGeo.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from c2seg_kit.classes import CLASSES, NUM_LABELS
from c2seg_kit.errors import C2SegError
from c2seg_kit.io.checksums import DISTRIBUTED_MD5, distributed_md5_check
from c2seg_kit.io.locate import locate_data
from c2seg_kit.io.tiles import SPLIT_ROLES, SPLITS, TileData, open_tiles
from c2seg_kit.prepare.cache import PreparedData, RawTransform
from c2seg_kit.prepare.repair import repaired_hwc
from c2seg_kit.registry import MODALITIES, TRACKS, get_track
from c2seg_kit.render import class_map_image, text_font  # the class palette and font of `c2seg render`
from c2seg_kit.tiling import window_origins

from .windows import augment_window, read_window

Sample = dict
#: Scene caches are cut into the paper's training windows unless told otherwise (AB 128, BW 256 pixels).
PAPER_WINDOW = {"AB": 128, "BW": 256}
NORMALISE_CHOICES = (None, "minmax")
AUGMENT_CHOICES = (None, "once", "per-epoch")


def _minmax(chw: np.ndarray) -> np.ndarray:
    """Per-band min-max of one (C, H, W) array to float32 [0, 1] (a constant band becomes 0),
    computed in float64: the span of float32 values near +-3.4e38 overflows float32 (NaN samples)."""
    x = chw.astype(np.float64)
    lo = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - lo
    return np.divide(x - lo, span, out=np.zeros_like(x), where=span > 0).astype(np.float32)


def _modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    chosen = (modalities,) if isinstance(modalities, str) else tuple(modalities)
    unknown = [m for m in chosen if m not in MODALITIES]
    if not chosen or unknown or len(set(chosen)) != len(chosen):
        raise ValueError(f"modalities must be distinct names among {MODALITIES}, got {modalities!r}")
    return chosen


def _renamed(old: str, new: str) -> None:
    warnings.warn(f"the keyword {old}= is now {new}=", DeprecationWarning, stacklevel=3)


def band_names(channels: dict[str, int], pca: bool = False) -> list[str]:
    """``hsi_1``, ... (``hsi_pc1``, ... where the HSI holds PCA components), ``msi_1``, ``sar_1``, ..."""
    return [f"{m}_pc{i}" if (pca and m == "hsi") else f"{m}_{i}"
            for m, n in channels.items() for i in range(1, n + 1)]


def split_image(image: torch.Tensor, channels: dict[str, int]) -> dict[str, torch.Tensor]:
    """(C, H, W) or (B, C, H, W) -> one tensor per modality, cut by ``channels`` (a dataset's)."""
    if image.shape[-3] != sum(channels.values()):
        raise ValueError(f"image has {image.shape[-3]} channels; {channels} add up to {sum(channels.values())}")
    return dict(zip(channels, torch.split(image, list(channels.values()), dim=-3), strict=True))


def _stack(arrays: dict[str, np.ndarray], modalities: tuple[str, ...]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.concatenate([arrays[m] for m in modalities], axis=0),
                                                 dtype=np.float32))


class _Plots:
    """``plot`` and ``picture`` of a dataset with ``channels``."""

    channels: dict[str, int]

    def plot(self, sample: Sample, show_titles: bool = True, suptitle: str | None = None):
        """A matplotlib Figure of one sample (TorchGeo's plot): see :func:`plot`."""
        return plot(sample, self.channels, show_titles=show_titles, suptitle=suptitle)

    def picture(self, sample: Sample, **kwargs) -> Image.Image:
        """The same picture as a Pillow image (no matplotlib): see :func:`picture`."""
        return picture(sample, self.channels, **kwargs)


class C2SegTiles(_Plots, Dataset):
    """The challenge tiles of one split, one sample per tile (see the module docstring).

    ``root``: a folder holding ``C2Seg_XX/`` (or that folder itself) or the zip as distributed.
    ``split``: "train" (the source city, labelled) or "test" (the target city, no mask).
    ``modalities``: which of hsi, msi, sar to stack into ``image``, in that order.
    ``transforms``: run on each sample, last. ``checksum``: check the zip's MD5 against the one
    recorded for the archive as distributed (``C2Seg_AB.zip``, ``C2Seg_BW.zip``); a folder
    unzipped from it is not checked.
    ``track``: "AB" or "BW". ``normalise``: None (raw values as float32; NaN kept), "minmax"
    (NaN/inf repaired within the tile, then each band scaled to [0, 1] within the sample), or a
    prepared cache folder (or :class:`PreparedData`) of the same track: its repair, PCA (HSI
    becomes its components) and per-city normalisation, so samples equal what the cache holds.

    Files are opened lazily in each process (DataLoader workers included). A zip with compressed
    inner zips (BW's train split) has them decompressed once into a temporary folder, shared by
    forked workers; a folder unzipped from it (inner zips left as they are) needs no copy at all.
    """

    def __init__(self, root: str | Path = "data", split: str = "train", modalities: Sequence[str] = MODALITIES,
                 transforms: Callable[[Sample], Sample] | None = None, checksum: bool = False, *,
                 track: str = "AB", normalise: str | Path | PreparedData | None = None):
        if split in TRACKS:  # the old positional order (root, track, split)
            warnings.warn("C2SegTiles(root, track, ...) is now C2SegTiles(root, split, ..., track=...)",
                          DeprecationWarning, stacklevel=2)
            split, track = (modalities if isinstance(modalities, str) and modalities in SPLITS else "train"), split
            modalities = MODALITIES
        self.track = get_track(track)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.modalities = _modalities(modalities)
        where = locate_data(root, self.track)
        if where.layout != "tiles":
            raise C2SegError(f"{root} holds scene files, not challenge tiles; use C2SegPrepared on a prepared cache")
        self.path, self.split = where.path, split
        if checksum:
            self._check_md5()
        self.transforms = transforms
        self.normalise = normalise
        self._tiles: TileData | None = None
        self._pid: int | None = None
        split_data = self._split()
        self.ids: list[str] = list(split_data.ids)
        self.has_label = split_data.has_label
        self._transform, channels = self._prepared_transform(normalise, split_data)
        self.channels = {m: channels[m] for m in self.modalities}
        self.band_names = band_names(self.channels, pca=self._transform is not None)

    def _check_md5(self) -> None:
        if Path(self.path).is_dir():
            return
        check = distributed_md5_check(self.path)
        if check is None:
            raise C2SegError(f"checksum: {Path(self.path).name} is not a distributed archive name "
                             f"({', '.join(DISTRIBUTED_MD5)}); no MD5 to check it against")
        if not check["match"]:
            raise C2SegError(f"{self.path}: MD5 {check['md5']} is not the distributed archive's "
                             f"{check['expected_md5']} (a damaged or different download)")

    def _prepared_transform(self, normalise, split_data) -> tuple[RawTransform | None, dict[str, int]]:
        if normalise in NORMALISE_CHOICES:
            return None, self._file_bands(split_data)
        data = normalise if isinstance(normalise, PreparedData) else PreparedData(normalise)
        if data.track.name != self.track.name:
            raise C2SegError(f"{data.root} is prepared for track {data.track.name}, not {self.track.name}")
        city = data.city(SPLIT_ROLES[self.split])
        return city.transform(), dict(city.channels)

    def _file_bands(self, split_data) -> dict[str, int]:
        """Bands per modality as the files hold them (the first tile's headers; the reader checks
        that every tile agrees)."""
        if not self.ids:
            return dict(self.track.bands)
        bands = {}
        for m in MODALITIES:
            with split_data.open_raster(m, self.ids[0]) as raster:
                bands[m] = int(raster.chw[0])
        return bands

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
        """One tile as numpy arrays per modality (all three), normalised as configured."""
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
        sample: Sample = {"image": _stack(arrays, self.modalities)}
        if label is not None:
            sample["mask"] = torch.from_numpy(label.astype(np.int64))
        sample["tile"] = tile_id
        return self.transforms(sample) if self.transforms is not None else sample

    def close(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
            self._tiles = None


class C2SegPrepared(_Plots, Dataset):
    """Windows of one city of a prepared cache (scene or tile layout); the baseline trains on it.

    ``split``: "train" (the source city), "test" (the target city), or "source", "target" or a
    city's name. ``modalities`` and ``transforms``: as :class:`C2SegTiles`. ``window``: the
    window edge; default: whole tiles for a tile cache, the paper's training window (AB 128,
    BW 256) for a scene cache. ``stride``: default ``window`` (every pixel once; the last window
    snapped to the edge). A raster smaller than the window is filled by reflection, its mask
    with 0 (ignored): the baseline's one window reader (windows.py). Values are the cache's
    normalised ones (in [0, 1]).

    ``augment``: ``None``/``False`` none; ``"once"`` a rotation and flips drawn once per window from
    (seed, index), as the authors augment their window list when they build it; ``"per-epoch"``
    (or ``True``) drawn anew from (seed, epoch, index) (:meth:`set_epoch`). Either way runs repeat
    under a seed whatever the number of DataLoader workers.
    """

    def __init__(self, root: str | Path | PreparedData = "data", split: str = "train",
                 modalities: Sequence[str] = MODALITIES, transforms: Callable[[Sample], Sample] | None = None, *,
                 window: int | None = None, stride: int | None = None, augment: bool | str | None = None,
                 seed: int = 0, city: str | None = None):
        if city is not None:
            _renamed("city", "split")
            split = city
        self.data = root if isinstance(root, PreparedData) else PreparedData(root)
        self.city = self.data.city(SPLIT_ROLES.get(split, split))
        self.split = split
        self.modalities = _modalities(modalities)
        self.channels = {m: self.city.channels[m] for m in self.modalities}
        self.band_names = band_names(self.channels, pca=True)
        self.transforms = transforms
        self.augment = {True: "per-epoch", False: None}[augment] if isinstance(augment, bool) else augment
        if self.augment not in AUGMENT_CHOICES:
            raise ValueError(f"augment must be None, 'once' or 'per-epoch', got {augment!r}")
        self.seed, self.epoch = int(seed), 0
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

    @property
    def origins(self) -> list[tuple[str | None, int, int]]:
        """(tile id, or None in a scene cache; r0, c0) of every window, in sample order."""
        return [(tile_id, r0, c0) for tile_id, r0, c0, _, _ in self.items]

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentation ``"per-epoch"`` draws."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _raster(self, tile_id: str | None):
        return self.city if tile_id is None else self.city.tile(tile_id)

    def __getitem__(self, index: int) -> Sample:
        tile_id, r0, c0, wh, ww = self.items[index]
        raster = self._raster(tile_id)
        arrays, label = read_window(raster, r0, c0, wh, ww)
        if self.augment is not None:
            key = [self.seed, index] if self.augment == "once" else [self.seed, self.epoch, index]
            arrays, label = augment_window(arrays, label, np.random.default_rng(key))
        sample: Sample = {"image": _stack(arrays, self.modalities)}
        if raster.has_label:
            sample["mask"] = torch.from_numpy(label.astype(np.int64))
        sample["tile"] = tile_id or ""
        sample["origin"] = torch.tensor([r0, c0], dtype=torch.int64)
        return self.transforms(sample) if self.transforms is not None else sample


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
    """Top-left corner of each panel of :func:`picture` (left to right, one row)."""
    h, w = shape
    top = PAD + (LINE if title else 0) + HEAD
    return [(PAD + i * (w * scale + PAD), top) for i in range(panels)]


def _panels(sample: Sample, channels: dict[str, int]) -> tuple[list[tuple[str, np.ndarray]], dict[str, np.ndarray]]:
    """(modality name, false-colour (H, W, 3) uint8) per modality and the class maps of a sample."""
    image = {m: _numpy(x) for m, x in split_image(torch.as_tensor(sample["image"]), channels).items()}
    maps = {k: _numpy(sample[k]).astype(np.int64) for k in ("mask", "prediction") if k in sample}
    h, w = next(iter(image.values())).shape[-2:]
    for key, a in maps.items():
        if a.shape != (h, w) or a.min(initial=0) < 0 or a.max(initial=0) >= NUM_LABELS:
            raise ValueError(f"{key} must be an {h} x {w} map of classes 0..{NUM_LABELS - 1}")
    return [(m.upper(), false_colour(a)) for m, a in image.items()], maps


def picture(sample: Sample, channels: dict[str, int], *, scale: int | None = None,
            title: str | None = None) -> Image.Image:
    """A Pillow picture of one sample: each modality (cut from ``image`` by ``channels``) in false
    colour, the mask (and a "prediction", when the sample has one) in the class colours, and a
    legend of the classes present.

    Panels are the sample's size times ``scale`` (default: enough to make the long side about
    256 px), nearest-neighbour, so class colours stay exact; :func:`plot_layout` says where
    each panel lies.
    """
    colour, maps = _panels(sample, channels)
    h, w = colour[0][1].shape[:2]
    s = scale or max(1, round(256 / max(h, w)))
    panels = [(name, Image.fromarray(a)) for name, a in colour]
    panels += [(k, class_map_image(a.astype(np.uint8))) for k, a in maps.items()]
    present = sorted({int(v) for a in maps.values() for v in np.unique(a)})
    font = text_font(13)
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


#: The one line a plot without matplotlib raises.
MATPLOTLIB_HINT = "plot() needs matplotlib (pip install matplotlib); picture() draws the same with Pillow only"


def plot(sample: Sample, channels: dict[str, int], *, show_titles: bool = True, suptitle: str | None = None):
    """A matplotlib Figure of one sample, as TorchGeo's datasets plot: one axis per modality in
    false colour, then the mask and the prediction (when present) in the class colours. Without
    matplotlib: a :class:`C2SegError` with :data:`MATPLOTLIB_HINT`."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise C2SegError(MATPLOTLIB_HINT) from None
    colour, maps = _panels(sample, channels)
    panels = colour + [(k, np.asarray(class_map_image(a.astype(np.uint8)))) for k, a in maps.items()]
    fig = Figure(figsize=(3 * len(panels), 3.2))
    for ax, (name, rgb) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_axis_off()
        if show_titles:
            ax.set_title(name)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


__all__ = ["MATPLOTLIB_HINT", "PAPER_WINDOW", "C2SegPrepared", "C2SegTiles", "band_names", "false_colour", "picture",
           "plot", "plot_layout", "split_image"]
