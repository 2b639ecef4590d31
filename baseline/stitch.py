"""Where prediction windows go on one raster, and how their outputs become one class map.

Two stitches (``--stitch``):

- ``blend`` (the kit's default): windows overlap; their logits are blended with a weight that is 1
  in a window's interior and ramps down (never to zero) towards its edges, so a pixel is decided
  mostly by the windows that see it with the most context;
- ``authors``: the authors' tiling -- windows of the training size, no overlap, the last window of
  each row and column snapped to the raster's edge, and where that last window overlaps the one
  before it, the earlier window's labels are kept (their ``recover``/``patch_concat``).

Edges: a window never reaches past the raster. Along an axis shorter than the window, the window
shrinks to the largest multiple of 32 that fits (and the usual snapped windows cover the rest);
only an axis shorter than 32 pixels is padded, by reflection (the baseline's one window reader,
windows.py). Zero padding would show the network an image edge it never saw in training and cost
the last columns their accuracy.

Work proceeds one row of windows at a time: the raster's rows [r0, r0 + window) are read once,
every window in that band is predicted, and the rows no later window can touch are decided
(argmax over classes 1..13) and handed on. The memory needed is a few window-high bands,
whatever the raster's height.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from c2seg_kit.classes import NUM_CLASSES
from c2seg_kit.errors import C2SegError
from c2seg_kit.tiling import axis_starts

from .devices import autocast, channels_last_on, to_device
from .windows import read_row

# Output 0 ("unlabelled") is never predicted: the argmax runs over outputs 1..13.
FIRST_CLASS = 1
WINDOW_MULTIPLE = 32  # stem stride 2 x HRNet branches down to 1/16 of that grid
BLEND_WINDOW = 512  # the blend's default window; its default overlap is a quarter of the window


@dataclass(frozen=True)
class Tiling:
    """How one prediction tiles a raster: the stitch, the window edge and the overlap (blend only)."""

    stitch: str = "blend"
    window: int = BLEND_WINDOW
    overlap: int = BLEND_WINDOW // 4

    def check(self) -> Tiling:
        if self.stitch not in ("blend", "authors"):
            raise C2SegError(f"--stitch must be blend or authors, not {self.stitch!r}")
        if self.window <= 0 or self.window % WINDOW_MULTIPLE:
            raise C2SegError(f"--window must be a positive multiple of {WINDOW_MULTIPLE}, got {self.window}")
        if self.stitch == "authors" and self.overlap:
            raise C2SegError("--overlap applies to --stitch blend; the authors' windows do not overlap")
        if not 0 <= self.overlap < self.window:
            raise C2SegError(f"--overlap must be in [0, window), got {self.overlap} for window {self.window}")
        return self


def fit_window(length: int, window: int) -> int:
    """The window edge along an axis of `length` pixels: `window`, or, on a shorter axis, the largest
    multiple of 32 inside it (32 on an axis shorter than that, which is then reflect-padded)."""
    if length >= window:
        return window
    return max(WINDOW_MULTIPLE, length // WINDOW_MULTIPLE * WINDOW_MULTIPLE)


@dataclass(frozen=True)
class AxisPlan:
    """Windows along one axis: their edge, starts and blend ramp."""

    size: int
    starts: list[int]
    ramp: int

    @classmethod
    def make(cls, length: int, tiling: Tiling) -> AxisPlan:
        size = fit_window(length, tiling.window)
        if tiling.stitch == "authors":
            return cls(size, axis_starts(length, size, size), 0)
        # A shrunk window keeps at most half of itself as overlap (the requested one may not fit).
        overlap = tiling.overlap if size == tiling.window else min(tiling.overlap, size // 2)
        return cls(size, axis_starts(length, size, size - overlap), overlap)

    def owned(self, k: int, length: int) -> tuple[int, int]:
        """The span window k decides under the authors' stitch: from where the window before it
        ended (the earlier window keeps the overlap) to its own end."""
        lo = self.starts[k] if k == 0 else max(self.starts[k], self.starts[k - 1] + self.size)
        return lo, min(self.starts[k] + self.size, length)


def blend_weights(window: int, ramp: int, width: int | None = None, ramp_w: int | None = None) -> np.ndarray:
    """(window, width) float32: 1 inside, falling linearly over `ramp` pixels to the edges.

    Never zero, so pixels on the raster's border (seen by one window only) still get a vote.
    ``width`` / ``ramp_w`` default to ``window`` / ``ramp`` (a square window).
    """
    def ramp_1d(n: int, r: int) -> np.ndarray:
        i = np.arange(n)
        edge = np.minimum(i, n - 1 - i)
        return np.minimum(1.0, (edge + 1) / (max(r, 0) + 1)).astype(np.float32)

    return np.outer(ramp_1d(window, ramp), ramp_1d(window if width is None else width, ramp if ramp_w is None else ramp_w))


class _Windows:
    """Runs the model over batches of windows of one row band; logits of classes 1..13 on the CPU."""

    def __init__(self, model, device: torch.device, amp: bool, batch_size: int, bar: tqdm):
        self.model, self.device, self.amp, self.batch_size, self.bar = model, device, amp, batch_size, bar
        self.channels_last = channels_last_on(device)

    def row(self, raster, r0: int, rows: AxisPlan, cols: AxisPlan) -> Iterator[tuple[list[int], torch.Tensor]]:
        for b0 in range(0, len(cols.starts), self.batch_size):
            batch = cols.starts[b0:b0 + self.batch_size]
            inputs = [to_device(torch.from_numpy(x), self.device, self.channels_last)
                      for x in read_row(raster, r0, batch, rows.size, cols.size)]
            with autocast(self.device, self.amp):
                logits = self.model(*inputs, target=True)
            yield batch, logits[:, FIRST_CLASS:FIRST_CLASS + NUM_CLASSES].float().cpu()
            self.bar.update(len(batch))


def _progress(rows: AxisPlan, cols: AxisPlan, desc: str, progress: bool) -> tqdm:
    return tqdm(total=len(rows.starts) * len(cols.starts), desc=desc, unit="win", disable=not progress,
                leave=False, dynamic_ncols=True)


def blended_logit_sums(model, raster, tiling: Tiling, batch_size: int, device: torch.device, amp: bool,
                       progress: bool, desc: str) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Blend: yield (r0, weighted logit sums (13, rows, W), weight sums (rows, W)) for final rows.

    The arrays are views into the accumulator, valid until the next item is requested.
    """
    height, width = raster.shape
    rows, cols = AxisPlan.make(height, tiling), AxisPlan.make(width, tiling)
    weight = torch.from_numpy(blend_weights(rows.size, rows.ramp, cols.size, cols.ramp))
    padded_w = max(width, cols.size)
    # Weighted logit sums (classes 1..13) and weight sums for rows [r0, r0 + window): torch
    # tensors for the multi-threaded fused multiply-add, numpy views of the same memory for the rest.
    acc_t = torch.zeros((NUM_CLASSES, rows.size, padded_w), dtype=torch.float32)
    wsum_t = torch.zeros((rows.size, padded_w), dtype=torch.float32)
    acc, wsum = acc_t.numpy(), wsum_t.numpy()
    bar = _progress(rows, cols, desc, progress)
    windows = _Windows(model, device, amp, batch_size, bar)
    try:
        for i, r0 in enumerate(rows.starts):
            for batch, logits in windows.row(raster, r0, rows, cols):
                for k, c in enumerate(batch):
                    acc_t[:, :, c:c + cols.size].addcmul_(logits[k], weight)
                    wsum_t[:, c:c + cols.size].add_(weight)
            # Rows above the next band's start get no more votes: they are final.
            done = min((rows.starts[i + 1] if i + 1 < len(rows.starts) else height) - r0, rows.size)
            yield r0, acc[:, :done, :width], wsum[:done, :width]
            # Slide the accumulator up by `done` rows (numpy handles the overlapping copy).
            keep = rows.size - done
            acc[:, :keep] = acc[:, done:]
            wsum[:keep] = wsum[done:]
            acc[:, keep:] = 0
            wsum[keep:] = 0
    finally:
        bar.close()


def argmax_classes(acc: np.ndarray) -> np.ndarray:
    """uint8 classes 1..13 from (13, rows, W) scores, in column slabs (a small int64 temporary)."""
    out = np.empty(acc.shape[1:], np.uint8)
    for c in range(0, acc.shape[2], 1024):
        out[:, c:c + 1024] = acc[:, :, c:c + 1024].argmax(axis=0) + FIRST_CLASS
    return out


def blended_classes(model, raster, tiling: Tiling, batch_size: int, device: torch.device, amp: bool,
                    progress: bool, desc: str) -> Iterator[tuple[int, np.ndarray]]:
    """Blend: (r0, uint8 rows) from top to bottom."""
    for r0, acc, _ in blended_logit_sums(model, raster, tiling, batch_size, device, amp, progress, desc):
        # Dividing by the (positive) weight sum does not move the argmax: skip it.
        yield r0, argmax_classes(acc)


def authors_classes(model, raster, tiling: Tiling, batch_size: int, device: torch.device, amp: bool,
                    progress: bool, desc: str) -> Iterator[tuple[int, np.ndarray]]:
    """The authors' stitch: (r0, uint8 rows) from top to bottom, each pixel from the first window
    (in row, then column order) that covers it."""
    height, width = raster.shape
    rows, cols = AxisPlan.make(height, tiling), AxisPlan.make(width, tiling)
    bar = _progress(rows, cols, desc, progress)
    windows = _Windows(model, device, amp, batch_size, bar)
    try:
        for i, r0 in enumerate(rows.starts):
            own_r0, own_r1 = rows.owned(i, height)
            band = np.empty((own_r1 - own_r0, width), np.uint8)
            j = 0
            for batch, logits in windows.row(raster, r0, rows, cols):
                for k, c in enumerate(batch):
                    own_c0, own_c1 = cols.owned(j, width)
                    part = logits[k, :, own_r0 - r0:own_r1 - r0, own_c0 - c:own_c1 - c].numpy()
                    band[:, own_c0:own_c1] = argmax_classes(part)
                    j += 1
            yield own_r0, band
    finally:
        bar.close()


STITCHES = {"blend": blended_classes, "authors": authors_classes}
