"""Reader for the WHISPERS challenge GeoTIFF tiles (C2SEG.md section 1, layout 2).

``C2Seg_AB/{train,test}/{msi,sar,hsi,label}/<id>.tiff``: one multi-band GeoTIFF per tile and
modality, band-first. The train split is the source city, the test split the target city
(which ships without labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from c2seg_kit.errors import DatasetNotFoundError, InvalidDataError
from c2seg_kit.registry import MODALITIES, Track

SPLITS = ("train", "test")
SUFFIXES = (".tiff", ".tif")


def find_tile_root(data_dir: Path, track: Track) -> Path | None:
    """The C2Seg_XX folder: `data_dir` itself or its child of that name."""
    for root in (data_dir / track.tile_dir, data_dir):
        if any((root / split / "msi").is_dir() for split in SPLITS):
            return root
    return None


class TileSplit:
    """The tiles of one split, read one tile at a time."""

    def __init__(self, root: Path, split: str):
        self.root = Path(root)
        self.split = split
        base = self.root / split
        ids: dict[str, set[str]] = {}
        for m in (*MODALITIES, "label"):
            folder = base / m
            ids[m] = {p.stem for p in folder.iterdir() if p.suffix.lower() in SUFFIXES} if folder.is_dir() else set()
        missing = [m for m in MODALITIES if not ids[m]]
        if missing:
            raise DatasetNotFoundError(f"expected tiles in {', '.join(str(base / m) for m in missing)}")
        if not (ids["hsi"] == ids["msi"] == ids["sar"]):
            odd = sorted((ids["hsi"] ^ ids["msi"]) | (ids["msi"] ^ ids["sar"]))[:5]
            raise InvalidDataError(f"{base}: modalities list different tiles (e.g. {', '.join(odd)})")
        self.ids = sorted(ids["msi"])
        self.has_label = bool(ids["label"])
        if self.has_label and ids["label"] != ids["msi"]:
            raise InvalidDataError(f"{base}/label lists different tiles than the images")

    def _path(self, modality: str, tile_id: str) -> Path:
        for suffix in SUFFIXES:
            p = self.root / self.split / modality / f"{tile_id}{suffix}"
            if p.is_file():
                return p
        raise DatasetNotFoundError(f"no {modality} tile {tile_id} in {self.root / self.split / modality}")

    def read(self, modality: str, tile_id: str) -> np.ndarray:
        """A tile as (C, H, W) for images (band-first, as distributed) or (H, W) for labels."""
        import tifffile

        path = self._path(modality, tile_id)
        try:
            arr = tifffile.imread(path)
        except Exception as e:  # tifffile raises several types for broken files
            raise InvalidDataError(f"{path} is not a readable GeoTIFF ({type(e).__name__}: {e})") from None
        if modality == "label":
            if arr.ndim == 3 and arr.shape[0] == 1:
                arr = arr[0]
            if arr.ndim != 2:
                raise InvalidDataError(f"{path}: label tile has shape {arr.shape}, expected H x W")
            return arr
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise InvalidDataError(f"{path}: tile has shape {arr.shape}, expected bands x H x W")
        return arr

    def read_tile(self, tile_id: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """All modalities of one tile, checked to agree in size."""
        arrays = {m: self.read(m, tile_id) for m in MODALITIES}
        label = self.read("label", tile_id) if self.has_label else None
        sizes = {m: a.shape[1:] for m, a in arrays.items()}
        if label is not None:
            sizes["label"] = label.shape
        if len(set(sizes.values())) != 1:
            raise InvalidDataError(f"tile {tile_id} ({self.split}): modalities disagree in size {sizes}")
        return arrays, label
