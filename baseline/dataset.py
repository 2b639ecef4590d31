"""A lazy windowed torch Dataset over the prepared cache (c2seg_kit.prepare.cache).

It lives in the baseline package, not in the core, because it needs torch: the light install
(the core alone) imports no torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from c2seg_kit.errors import C2SegError
from c2seg_kit.prepare.cache import PreparedData
from c2seg_kit.registry import MODALITIES, get_track
from c2seg_kit.tiling import window_origins


def open_prepared(path: str | Path, track: str) -> PreparedData:
    """The prepared cache at `path`, which must hold `track`; anything else is a one-line user error."""
    try:
        name = get_track(track).name
    except ValueError as e:
        raise C2SegError(str(e)) from None
    data = PreparedData(path)
    if data.track.name != name:
        data.close()
        raise C2SegError(f"{path} is prepared for track {data.track.name}, not {name}")
    return data


def augment_window(arrays: dict[str, np.ndarray], label: np.ndarray, rng: np.random.Generator):
    """Random 90-degree rotation and vertical/horizontal flips, the same for every array.

    Images are (C, H, W), the label (H, W); the spatial axes are the last two of each.
    """
    k = int(rng.integers(4))
    flip_v, flip_h = rng.random(2) < 0.5

    def apply(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k, axes=(-2, -1))
        if flip_v:
            a = a[..., ::-1, :]
        if flip_h:
            a = a[..., :, ::-1]
        return np.ascontiguousarray(a)

    return {m: apply(a) for m, a in arrays.items()}, apply(label)


def read_padded(raster, r0: int, c0: int, height: int, width: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The (height, width) window at (r0, c0) of a raster (a prepared city or tile): every modality
    and the label, zero-padded (label 0, ignored) where the window reaches past the raster."""
    h, w = raster.shape
    r1, c1 = min(r0 + height, h), min(c0 + width, w)
    arrays = {m: raster.read(m, r0, r1, c0, c1) for m in MODALITIES}
    label = raster.read_label(r0, r1, c0, c1)
    pad = ((0, height - (r1 - r0)), (0, width - (c1 - c0)))
    if any(p[1] for p in pad):
        arrays = {m: np.pad(a, ((0, 0), *pad)) for m, a in arrays.items()}
        label = np.pad(label, pad)
    return arrays, label


class WindowDataset(Dataset):
    """Windows of one prepared city (every raster of it: the scene, or each tile), read on demand.

    Item: ``{"hsi", "msi", "sar": float32 (C, w, w), "label": int64 (w, w), "origin": int64 [r0, c0],
    "raster": int64}``. Windows cover every pixel of each raster (the last ones snapped to the
    edges); a raster smaller than the window is zero-padded (label 0, ignored).

    ``augment``: ``None``/``False`` none; ``"once"`` a rotation and flips drawn once per window from
    (seed, index), as the authors augment their window list when they build it; ``"per-epoch"``
    (or ``True``) drawn anew from (seed, epoch, index). Either way runs repeat under a seed whatever
    the number of DataLoader workers.
    """

    def __init__(
        self,
        prepared: str | Path | PreparedData,
        city: str = "source",
        window: int = 128,
        stride: int = 64,
        augment: bool | str | None = None,
        seed: int = 0,
    ):
        data = prepared if isinstance(prepared, PreparedData) else PreparedData(prepared)
        self.city = data.city(city)
        self.rasters = [raster for _, raster in self.city.rasters()]
        self.window = int(window)
        self.augment = {True: "per-epoch", False: None}[augment] if isinstance(augment, bool) else augment
        if self.augment not in (None, "once", "per-epoch"):
            raise ValueError(f"augment must be None, 'once' or 'per-epoch', got {augment!r}")
        self.seed = int(seed)
        self.epoch = 0
        self.origins = [(k, r0, c0) for k, raster in enumerate(self.rasters)
                        for r0, c0 in window_origins(*raster.shape, self.window, int(stride))]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.origins)

    def read_window(self, r0: int, c0: int, raster: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return read_padded(self.rasters[raster], r0, c0, self.window, self.window)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        raster, r0, c0 = self.origins[index]
        arrays, label = self.read_window(r0, c0, raster)
        if self.augment is not None:
            key = [self.seed, index] if self.augment == "once" else [self.seed, self.epoch, index]
            arrays, label = augment_window(arrays, label, np.random.default_rng(key))
        item = {m: torch.from_numpy(a) for m, a in arrays.items()}
        item["label"] = torch.from_numpy(label.astype(np.int64))
        item["origin"] = torch.tensor([r0, c0], dtype=torch.int64)
        item["raster"] = torch.tensor(raster, dtype=torch.int64)
        return item
