"""Sliding-window tiling over a raster: the one place that decides where windows go."""

from __future__ import annotations


def axis_starts(length: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis so that every index in [0, length) is covered.

    Windows step by `stride`; the last one is snapped to the edge (start = length - window)
    instead of running past it. A length shorter than the window gives one start, 0: the
    caller pads.
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got window={window}, stride={stride}")
    if stride > window:
        raise ValueError(f"stride {stride} larger than window {window} would leave gaps")
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def window_origins(height: int, width: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(row, col) origins of windows covering every pixel of a height x width raster."""
    return [(r, c) for r in axis_starts(height, window, stride) for c in axis_starts(width, window, stride)]


def stride_for_overlap(window: int, overlap: float) -> int:
    """Stride giving the requested fractional overlap (0.5 -> half a window)."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    return max(1, round(window * (1.0 - overlap)))
