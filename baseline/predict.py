"""Whole-city prediction with a HighDAN: sliding windows, blended logits, row-band output.

Windows may be larger than the training patches (the network is fully convolutional).
Overlapping windows are blended with a weight that is 1 in a window's interior and ramps
down (never to zero) towards its edges, so a pixel is decided mostly by the windows that
see it with the most context. Work proceeds one row of windows at a time: the city's rows
[r0, r0 + window) are read once from the prepared cache, every window in that band is
predicted, and the rows no later window can touch are decided (argmax over classes 1..13)
and handed to a sink (the submission file, or the confusion matrix during training). The
memory needed is a few window-high bands, whatever the city's height.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from c2seg_kit.classes import NUM_CLASSES
from c2seg_kit.errors import C2SegError
from c2seg_kit.metrics import ConfusionMatrix
from c2seg_kit.prepared import PreparedCity
from c2seg_kit.registry import MODALITIES, Track
from c2seg_kit.submission import open_labels
from c2seg_kit.tiling import axis_starts
from c2seg_kit.writers import submission_writer

from .checkpoint import load_checkpoint
from .dataset import open_prepared
from .devices import autocast, channels_last_on, place_model, resolve_device, to_device

# Output 0 ("unlabelled") is never predicted: the argmax runs over outputs 1..13.
FIRST_CLASS = 1
WINDOW_MULTIPLE = 32  # stem stride 2 x HRNet branches down to 1/16 of that grid


def blend_weights(window: int, ramp: int) -> np.ndarray:
    """(window, window) float32: 1 inside, falling linearly over `ramp` pixels to the edges.

    Never zero, so pixels on the city border (seen by one window only) still get a vote.
    """
    i = np.arange(window)
    edge = np.minimum(i, window - 1 - i)
    w1 = np.minimum(1.0, (edge + 1) / (max(ramp, 0) + 1)).astype(np.float32)
    return np.outer(w1, w1)


def check_window(window: int, overlap: int) -> None:
    if window <= 0 or window % WINDOW_MULTIPLE:
        raise C2SegError(f"--window must be a positive multiple of {WINDOW_MULTIPLE}, got {window}")
    if not 0 <= overlap < window:
        raise C2SegError(f"--overlap must be in [0, window), got {overlap} for window {window}")


def _read_windows(city, r0: int, cols: list[int], window: int) -> list[np.ndarray]:
    """Inputs (B, C, window, window) per modality for the windows at (r0, c) for c in cols.

    One read per modality covers the batch's columns, so memory follows the batch, not the
    city's width; parts beyond the city's edge (a city smaller than the window) are zeros.
    """
    height, width = city.shape
    r1 = min(r0 + window, height)
    c_lo, c_hi = cols[0], min(cols[-1] + window, width)
    out = []
    for m in MODALITIES:
        block = city.read(m, r0, r1, c_lo, c_hi)
        span = max(cols[-1] + window, c_hi) - c_lo
        if block.shape[1] < window or block.shape[2] < span:
            block = np.pad(block, ((0, 0), (0, window - block.shape[1]), (0, span - block.shape[2])))
        out.append(np.stack([block[:, :, c - c_lo:c - c_lo + window] for c in cols]))
    return out


def _accumulate(model, city, window: int, overlap: int, batch_size: int, device: torch.device, amp: bool,
                progress: bool, desc: str) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (r0, weighted logit sums (13, rows, W), weight sums (rows, W)) for final rows.

    The arrays are views into the accumulator, valid until the next item is requested.
    """
    check_window(window, overlap)
    height, width = city.shape
    row_starts = axis_starts(height, window, window - overlap)
    col_starts = axis_starts(width, window, window - overlap)
    weight = torch.from_numpy(blend_weights(window, overlap))
    padded_w = max(width, window)
    # Weighted logit sums (classes 1..13) and weight sums for rows [r0, r0 + window): torch
    # tensors for the multi-threaded fused multiply-add, numpy views of the same memory for the rest.
    acc_t = torch.zeros((NUM_CLASSES, window, padded_w), dtype=torch.float32)
    wsum_t = torch.zeros((window, padded_w), dtype=torch.float32)
    acc, wsum = acc_t.numpy(), wsum_t.numpy()
    model.eval()
    channels_last = channels_last_on(device)
    bar = tqdm(total=len(row_starts) * len(col_starts), desc=desc, unit="win", disable=not progress,
               leave=False, dynamic_ncols=True)
    try:
        for i, r0 in enumerate(row_starts):
            for b0 in range(0, len(col_starts), batch_size):
                cols = col_starts[b0:b0 + batch_size]
                inputs = [to_device(torch.from_numpy(x), device, channels_last)
                          for x in _read_windows(city, r0, cols, window)]
                with autocast(device, amp):
                    logits = model(*inputs, target=True)
                logits = logits[:, FIRST_CLASS:FIRST_CLASS + NUM_CLASSES].float().cpu()
                for k, c in enumerate(cols):
                    acc_t[:, :, c:c + window].addcmul_(logits[k], weight)
                    wsum_t[:, c:c + window].add_(weight)
                del inputs, logits
                bar.update(len(cols))
            # Rows above the next band's start get no more votes: they are final.
            done = (row_starts[i + 1] if i + 1 < len(row_starts) else height) - r0
            yield r0, acc[:, :done, :width], wsum[:done, :width]
            # Slide the accumulator up by `done` rows (numpy handles the overlapping copy).
            keep = window - done
            acc[:, :keep] = acc[:, done:]
            wsum[:keep] = wsum[done:]
            acc[:, keep:] = 0
            wsum[keep:] = 0
    finally:
        bar.close()


@torch.no_grad()
def blended_rows(model, city, *, window: int = 512, overlap: int = 128, batch_size: int = 4,
                 device: str | torch.device = "cpu", amp: bool = False, progress: bool = True,
                 desc: str = "predict") -> Iterator[tuple[int, np.ndarray]]:
    """Yield (r0, float32 (13, rows, W)): the blended logits of classes 1..13, top to bottom.

    Consecutive, non-overlapping row blocks cover the city; each is final when yielded.
    """
    for r0, acc, wsum in _accumulate(model, city, window, overlap, batch_size, torch.device(device), amp,
                                     progress, desc):
        yield r0, acc / wsum[None]


@torch.no_grad()
def predict_city(model, city, *, sink: Callable[[int, np.ndarray], None], window: int = 512, overlap: int = 128,
                 batch_size: int = 4, device: str | torch.device = "cpu", amp: bool = False,
                 progress: bool = True, desc: str = "predict") -> None:
    """Predict every pixel of a PreparedCity; call sink(r0, uint8 rows with values 1..13)
    with consecutive row blocks from top to bottom."""
    for r0, acc, wsum in _accumulate(model, city, window, overlap, batch_size, torch.device(device), amp,
                                     progress, desc):
        # Dividing by the (positive) weight sum does not move the argmax: skip it.
        rows = np.empty(wsum.shape, np.uint8)
        for c in range(0, wsum.shape[1], 1024):  # column slabs keep the int64 argmax temporary small
            rows[:, c:c + 1024] = acc[:, :, c:c + 1024].argmax(axis=0) + FIRST_CLASS
        sink(r0, rows)


# --- sinks ------------------------------------------------------------------------------------

class ConfusionSink:
    """Accumulates the confusion matrix of predicted rows against label rows."""

    def __init__(self, labels: Callable[[int, int], np.ndarray]):
        self.labels = labels  # labels(r0, r1) -> uint8 rows
        self.cm = ConfusionMatrix()

    def __call__(self, r0: int, rows: np.ndarray) -> None:
        self.cm.update(self.labels(r0, r0 + rows.shape[0]), rows)

    def scores(self) -> dict:
        return self.cm.scores()


def evaluate_city(model, city, labels: Callable[[int, int], np.ndarray], **kw) -> dict:
    """The kit's scores (c2seg_kit.metrics) of the model's prediction of a city."""
    sink = ConfusionSink(labels)
    predict_city(model, city, sink=sink, **kw)
    return sink.scores()


def target_labels(labels_file: Path | None, target: PreparedCity, track: Track
                  ) -> Callable[[int, int], np.ndarray] | None:
    """labels(r0, r1) -> uint8 rows of the target city, from `labels_file` when given, else from the
    prepared city itself; None when no labels are known."""
    if labels_file is not None:
        with open_labels(labels_file) as lab:
            if lab.track != track.name:
                raise C2SegError(f"{labels_file} holds {lab.track} labels, not {track.name}")
            full = lab.read()
        if tuple(full.shape) != tuple(target.shape):
            raise C2SegError(f"{labels_file}: label shape {full.shape} != target city shape {target.shape}")
        return lambda r0, r1: full[r0:r1]
    if target.has_label:
        width = target.shape[1]
        return lambda r0, r1: target.read_label(r0, r1, 0, width)
    return None


def predict_to_file(checkpoint: str | os.PathLike, data: str | os.PathLike, track: str,
                    out: str | os.PathLike, *, window: int = 512, overlap: int = 128, batch_size: int | None = None,
                    device: str = "auto", amp: bool = True, method: str | None = None,
                    progress: bool = True) -> dict:
    """Predict the target city of a prepared track into a submission file; returns a summary.

    batch_size None = 4 windows per pass on CUDA, 1 on the CPU.
    """
    check_window(window, overlap)
    dev = resolve_device(device)
    if batch_size is None:
        # A 512 x 512 window of the tiny net needs ~0.3 GB of activations on the CPU, where
        # batching buys little speed; a GPU wants several windows per pass.
        batch_size = 4 if dev.type == "cuda" else 1
    model, cfg = load_checkpoint(checkpoint, device=dev)
    model = place_model(model, dev)
    with open_prepared(data, track) as prepared:
        city = prepared.target
        expected = dict(cfg.model.in_channels)
        if dict(city.channels) != expected:
            raise C2SegError(f"{data}: target bands {city.channels} do not match the checkpoint's {expected}")
        started = time.perf_counter()
        with submission_writer(out, city.shape, prepared.track.name, method=method or f"HighDAN ({cfg.name})") as sink:
            predict_city(model, city, window=window, overlap=overlap, batch_size=batch_size, device=dev,
                         amp=amp, sink=sink, progress=progress, desc=f"predict {city.name}")
        seconds = time.perf_counter() - started
        h, w = city.shape
    return {"out": str(out), "shape": (h, w), "seconds": seconds, "pixels_per_second": h * w / max(seconds, 1e-9)}
