"""The oracles of the baseline's window stitching: a model whose logits depend on the position
inside the window (so overlapping windows disagree and the blend decides), the edge rule of the
windows, and a naive per-pixel blend over every window covering a pixel. Needs torch."""

from __future__ import annotations

import numpy as np
import torch

from c2seg_baseline.predict import blend_weights
from c2seg_kit.tiling import axis_starts


class PositionModel(torch.nn.Module):
    """Logits depend on the input AND on the position inside the window, so overlapping
    windows disagree and the blend decides; records how it was called."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.mix = torch.randn(14, 16, generator=g)
        self.pos = torch.randn(14, 2, generator=g)
        self.calls: list[tuple[tuple[int, ...], bool]] = []

    def forward(self, hsi, msi, sar, *, target):
        self.calls.append((tuple(hsi.shape), target))
        x = torch.cat([hsi, msi, sar], 1)
        logits = torch.einsum("kc,bchw->bkhw", self.mix, x)
        h, w = x.shape[-2:]
        rr = torch.linspace(-1, 1, h).view(1, 1, h, 1)
        cc = torch.linspace(-1, 1, w).view(1, 1, 1, w)
        return logits + self.pos[:, 0].view(1, -1, 1, 1) * rr + self.pos[:, 1].view(1, -1, 1, 1) * cc


def axis_windows(length, window, overlap):
    """The edge rule: on an axis shorter than the window, the largest multiple of 32 that fits
    (32 at least, then reflect-padded), keeping at most half of it as overlap."""
    size = window if length >= window else max(32, length // 32 * 32)
    ov = overlap if size == window else min(overlap, size // 2)
    return size, ov, axis_starts(length, size, size - ov)


def padded_window(city, r0: int, c0: int, wh: int, ww: int) -> list:
    """The oracles' model input: each modality's window, mirrored past the city's edge, batch of 1."""
    h, w = city.shape
    xs = []
    for m in ("hsi", "msi", "sar"):
        a = city.read(m, r0, min(r0 + wh, h), c0, min(c0 + ww, w))
        pad = ((0, 0), (0, wh - a.shape[1]), (0, ww - a.shape[2]))
        xs.append(torch.from_numpy(np.pad(a, pad, mode="symmetric"))[None])
    return xs

def naive_blend(model, city, window, overlap):
    """Per-pixel loop over every window covering the pixel: sum(w * logit) / sum(w)."""
    h, w = city.shape
    (wh, ov_h, rows), (ww, ov_w, cols) = axis_windows(h, window, overlap), axis_windows(w, window, overlap)
    weight = blend_weights(wh, ov_h, ww, ov_w)
    num = np.zeros((13, h, w))
    den = np.zeros((h, w))
    for r0 in rows:
        for c0 in cols:
            with torch.no_grad():
                logit = model(*padded_window(city, r0, c0, wh, ww), target=True)[0, 1:].numpy()
            for i in range(min(wh, h - r0)):
                for j in range(min(ww, w - c0)):
                    num[:, r0 + i, c0 + j] += weight[i, j] * logit[:, i, j]
                    den[r0 + i, c0 + j] += weight[i, j]
    return num / den
