"""The one window reader of the baseline: training, the datasets and prediction read through it.

A window may reach past its raster only where the raster is smaller than the window (training
windows and prediction windows are otherwise snapped inside the raster's edges). There the images
are filled by reflection ("symmetric": the edge pixel repeated, then the pixels before it) and the
label with 0 (unlabelled, which the loss and the scores ignore). Reflection, not zeros: zeros
would show the network an image edge that the real scenes do not have, in training as in
prediction, so a padded window looks like the rest of the city on both sides.

It lives in the baseline package, not in the core, because its callers need torch: the light
install (the core alone) imports no torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from c2seg_kit.errors import C2SegError
from c2seg_kit.prepare.cache import PreparedData
from c2seg_kit.registry import MODALITIES, get_track

__all__ = ["augment_window", "open_prepared", "read_row", "read_window"]


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


def read_window(raster, r0: int, c0: int, height: int, width: int, *,
                label: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The (height, width) window at (r0, c0) of a raster (a prepared city or tile): every modality
    as float32 (C, height, width) and, with `label`, the uint8 label (height, width) (zeros where
    the raster has none). Past the raster: images reflected, the label 0 (see the module docstring).
    """
    h, w = raster.shape
    r1, c1 = min(r0 + height, h), min(c0 + width, w)
    arrays = {m: raster.read(m, r0, r1, c0, c1) for m in MODALITIES}
    lab = raster.read_label(r0, r1, c0, c1) if label else None
    pad = ((0, height - (r1 - r0)), (0, width - (c1 - c0)))
    if any(p[1] for p in pad):
        arrays = {m: np.pad(a, ((0, 0), *pad), mode="symmetric") for m, a in arrays.items()}
        if lab is not None:
            lab = np.pad(lab, pad)
    return arrays, lab


def read_row(raster, r0: int, cols: list[int], height: int, width: int) -> list[np.ndarray]:
    """Inputs (B, C, height, width) per modality (in MODALITIES order) for the windows at (r0, c),
    c in `cols` (ascending): one :func:`read_window` covers them all, so memory follows the batch,
    not the raster's width."""
    arrays, _ = read_window(raster, r0, cols[0], height, cols[-1] + width - cols[0], label=False)
    return [np.stack([arrays[m][:, :, c - cols[0]:c - cols[0] + width] for c in cols]) for m in MODALITIES]
