"""The C2Seg class table (C2SEG.md section 2): one table, read by everything that names a class."""

from __future__ import annotations

from dataclasses import dataclass


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
