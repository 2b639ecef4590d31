"""The C2Seg class table (docs/data.md, "Classes and colours"): one table, read by everything that names a class,
and the one check that an array holds class ids 0..13, used by every reader, writer and metric."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str  # machine name, used as a JSON key
    display: str
    colour: str  # "#RRGGBB"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return tuple(int(self.colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "background", "Unlabelled", "#000000"),
    ClassInfo(1, "surface_water", "Surface water", "#00FFFF"),
    ClassInfo(2, "street", "Street", "#FFFFFF"),
    ClassInfo(3, "urban_fabric", "Urban fabric", "#FF0000"),
    ClassInfo(4, "industrial_commercial_transport", "Industrial, commercial and transport", "#DDA0DD"),
    ClassInfo(5, "mine_dump_construction", "Mine, dump and construction sites", "#9400D3"),
    ClassInfo(6, "artificial_vegetated", "Artificial, vegetated areas", "#FF00FF"),
    ClassInfo(7, "arable_land", "Arable land", "#FFFF00"),
    ClassInfo(8, "permanent_crops", "Permanent crops", "#CD853F"),
    ClassInfo(9, "pastures", "Pastures", "#BDB76B"),
    ClassInfo(10, "forests", "Forests", "#00FF00"),
    ClassInfo(11, "shrub", "Shrub", "#9ACD32"),
    ClassInfo(12, "open_spaces", "Open spaces with no vegetation", "#8B4513"),
    ClassInfo(13, "inland_wetlands", "Inland wetlands", "#483D8B"),
)

#: Number of label values (0..13); the model has this many outputs.
NUM_LABELS = len(CLASSES)
#: The evaluated classes, 1..13 (0 is unlabelled and ignored).
EVAL_CLASSES = CLASSES[1:]
NUM_CLASSES = len(EVAL_CLASSES)
IGNORE_INDEX = 0
CLASS_NAMES = tuple(c.name for c in EVAL_CLASSES)


def palette() -> list[tuple[int, int, int]]:
    """RGB colours indexed by label value 0..13."""
    return [c.rgb for c in CLASSES]


# ---- class-id arrays -----------------------------------------------------------------------------

#: How many distinct bad values a refusal lists before "...".
SHOWN_VALUES = 8

ErrorFactory = Callable[[str], Exception]


def _outside(a: np.ndarray) -> np.ndarray:
    """Mask of the values that are not class ids: below 0, above 13, or (floats) not whole numbers."""
    if a.dtype.kind == "u":
        return a >= NUM_LABELS
    bad = (a < 0) | (a >= NUM_LABELS)
    if a.dtype.kind == "f":
        bad |= ~np.isfinite(a) | (a != np.floor(a))
    return bad


def holds_class_ids(a: np.ndarray) -> bool:
    """True when every value of ``a`` is a class id 0..13 (min/max only for integer arrays)."""
    if a.size == 0:
        return True
    if a.dtype.kind == "u":
        return int(a.max()) < NUM_LABELS
    if a.dtype.kind == "i":
        return int(a.min()) >= 0 and int(a.max()) < NUM_LABELS
    return not _outside(a).any()


def _shown(value: Any) -> tuple[tuple, str]:
    """(sort key, text) of one bad value: whole numbers print as integers, NaN sorts last."""
    v = value.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    key = (1, 0) if v != v else (0, v)  # NaN is the one value not equal to itself
    return key, str(v)


class OutOfRange:
    """Values outside 0..13 met so far, over one array or many blocks of a raster: how many, and
    the smallest distinct ones. A refusal says how many and which, never where."""

    def __init__(self) -> None:
        self.count = 0
        self._seen: dict[str, tuple] = {}  # text -> sort key, the SHOWN_VALUES + 1 smallest

    def add(self, a: np.ndarray) -> OutOfRange:
        bad = a[_outside(a)]
        self.count += int(bad.size)
        for v in np.unique(bad)[: SHOWN_VALUES + 1]:
            key, text = _shown(v)
            self._seen.setdefault(text, key)
        kept = sorted(self._seen, key=self._seen.__getitem__)[: SHOWN_VALUES + 1]
        self._seen = {t: self._seen[t] for t in kept}
        return self

    def message(self, what: str) -> str:
        """"'prediction' has 3 values outside 0..13 (seen: 14, 255)"."""
        texts = list(self._seen)
        shown = ", ".join(texts[:SHOWN_VALUES]) + (", ..." if len(texts) > SHOWN_VALUES else "")
        return f"{what} has {self.count} values outside 0..{NUM_LABELS - 1} (seen: {shown})"


def check_class_values(a: np.ndarray, what: str, error: ErrorFactory = ValueError) -> None:
    """Refuse ``a`` (any dtype, any rank) unless every value is a class id 0..13."""
    if not holds_class_ids(a):
        raise error(OutOfRange().add(a).message(what))


def check_integers(a: np.ndarray, what: str, error: ErrorFactory = ValueError) -> None:
    if not np.issubdtype(a.dtype, np.integer):
        raise error(f"{what} must hold integers, got dtype {a.dtype}")


def as_class_ids(a: np.ndarray, what: str, error: ErrorFactory = ValueError) -> np.ndarray:
    """``a`` as uint8 after checking it holds integers 0..13: never a silent cast (256 is not 0)."""
    check_integers(a, what, error)
    check_class_values(a, what, error)
    return a.astype(np.uint8, copy=False)


def as_class_map(array: Any, what: str, error: ErrorFactory = ValueError) -> np.ndarray:
    """A non-empty 2-D (H x W) array of class ids as uint8, checked as :func:`as_class_ids`."""
    a = np.asarray(array)
    if a.ndim != 2 or 0 in a.shape:
        raise error(f"{what} must be a non-empty 2-D (H x W) array, got shape {a.shape}")
    return as_class_ids(a, what, error)


def zero_prediction_refusal(what: str, zeros: int) -> str:
    """Why predictions holding 0 are refused, in one line: 0 is no class (a predicted 0 is scored
    wrong wherever a pixel is labelled, so it can only cost), and a model trained with "reduce
    zero label" writes 0-based ids (0..12) that --add-one shifts to 1..13."""
    return (f"{what} holds {zeros:,} pixels of value {IGNORE_INDEX}, which is no class (scored wrong wherever a pixel "
            "is labelled): 0-based class ids (0..12, as \"reduce zero label\" models write them) are shifted to "
            "1..13 by `c2seg pack --add-one`; otherwise give those pixels a class 1..13")
