"""Writing challenge-like tiles the ways the real world writes them, for the tile reader's tests.

`write_gdal` goes through GDAL (rasterio) with its defaults, as the organizers' files were made:
pixel-interleaved, georeferenced. `write_planar` writes band-first TIFFs with tifffile. Neither
uses the kit's own writer, so the reader is tested against files it did not make.
"""

from __future__ import annotations

import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import rasterio
import tifffile
from affine import Affine

MODALITY_BANDS = {"hsi": 6, "msi": 4, "sar": 2}  # few HSI bands keep the tests fast
DTYPES = {"hsi": np.int16, "msi": np.uint16, "sar": np.float32, "label": np.uint8}


def write_gdal(path: Path, array: np.ndarray, *, epsg: int | None = 32632, origin=(636000.0, 5366000.0),
               pixel: float = 10.0, nodata: float | None = None, **creation) -> None:
    """A (C, H, W) or (H, W) array as GDAL writes it: default (pixel) interleave, optional
    georeferencing, optional nodata value (GDAL's own tag) and creation options (compress=...)."""
    data = array if array.ndim == 3 else array[None]
    profile = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                   dtype=data.dtype.name, nodata=nodata, **creation)
    if epsg is not None:
        profile.update(crs=f"EPSG:{epsg}", transform=Affine(pixel, 0.0, origin[0], 0.0, -pixel, origin[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def write_planar(path: Path, array: np.ndarray) -> None:
    """A (C, H, W) array as one band-first TIFF page (PlanarConfiguration 2), no georeferencing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, photometric="minisblack", planarconfig="separate" if array.ndim == 3 else None)


def tile_arrays(rng: np.random.Generator, size: tuple[int, int], with_label: bool) -> dict[str, np.ndarray]:
    h, w = size
    arrays = {
        "hsi": rng.integers(-50, 5000, (MODALITY_BANDS["hsi"], h, w)).astype(np.int16),
        "msi": rng.integers(0, 4000, (MODALITY_BANDS["msi"], h, w)).astype(np.uint16),
        "sar": rng.normal(-12, 4, (MODALITY_BANDS["sar"], h, w)).astype(np.float32),
    }
    arrays["sar"][0, 0, 0] = np.nan
    if with_label:
        arrays["label"] = rng.integers(0, 14, (h, w)).astype(np.uint8)
    return arrays


def make_tiles(root: Path, *, sizes=None, writer=write_gdal, nested_hsi: bool = False, suffix=".tiff",
               seed: int = 0) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """A small C2Seg_XX folder at ``root``: train (labelled) and test tiles; returns what was written.

    ``sizes`` maps split -> list of (H, W) per tile (ids "1", "2", ...).
    """
    rng = np.random.default_rng(seed)
    sizes = sizes or {"train": [(16, 16), (16, 16), (8, 12)], "test": [(16, 16), (16, 16)]}
    written = {}
    for split, shapes in sizes.items():
        for i, size in enumerate(shapes, start=1):
            arrays = tile_arrays(rng, size, with_label=split == "train")
            for m, a in arrays.items():
                folder = root / split / m / m if (nested_hsi and m == "hsi" and split == "train") else root / split / m
                writer(folder / f"{i}{suffix}", a)
            written[(split, str(i))] = arrays
    return written


def zip_folder(folder: Path, zip_path: Path, *, arcroot: str | None = None, method=zipfile.ZIP_DEFLATED) -> Path:
    """Zip ``folder`` as `zip -r` does: members named ``<folder name>/...``."""
    arcroot = folder.name if arcroot is None else arcroot
    with zipfile.ZipFile(zip_path, "w", method) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{arcroot}/{p.relative_to(folder).as_posix()}" if arcroot else p.relative_to(folder).as_posix())
    return zip_path


def bad_tile_folder(root, kind):
    """A C2Seg_AB folder under ``root`` with one defect of ``kind`` (sizes, missing, label, layout,
    bands, msi bands)."""
    make_tiles(root / "C2Seg_AB")
    base = root / "C2Seg_AB"
    if kind == "sizes":
        write_gdal(base / "train" / "sar" / "2.tiff", np.zeros((2, 16, 12), np.float32))
    elif kind == "missing":
        (base / "train" / "msi" / "1.tiff").unlink()
    elif kind == "label":
        write_gdal(base / "train" / "label" / "3.tiff", np.full((8, 12), 20, np.uint8))
    elif kind == "layout":
        tifffile.imwrite(base / "test" / "hsi" / "1.tiff", np.zeros((6, 16, 16), np.int16), photometric="minisblack")
    elif kind == "bands":
        write_gdal(base / "test" / "hsi" / "2.tiff", np.zeros((3, 16, 16), np.int16))
    elif kind == "msi bands":
        write_gdal(base / "test" / "msi" / "2.tiff", np.zeros((3, 16, 16), np.uint16))


def evil_zip(path, entries, method=zipfile.ZIP_DEFLATED):
    """A zip with the given (ZipInfo or name, bytes) members, written without any checks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", method) as zf:
            for info, data in entries:
                zf.writestr(info, data)
    return path


def _symlink(name):
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


#: Hostile tile archives: kind -> ([(member, bytes)], the refusal's words).
TIFF = b"II*\0" + b"\0" * 60
HOSTILE = {
    "escaping": ([("C2Seg_AB/train/msi/../../../../evil.tiff", TIFF)], "escapes the archive"),
    "absolute": ([("/etc/evil.tiff", TIFF)], "absolute name"),
    "drive": ([("C:\\evil.tiff", TIFF)], "absolute name"),
    "backslash escape": ([("C2Seg_AB\\..\\..\\evil.tiff", TIFF)], "escapes the archive"),
    "control": ([("C2Seg_AB/train/msi/1\x07.tiff", TIFF)], "control characters"),
    "symlink": ([(_symlink("C2Seg_AB/train/msi/1.tiff"), b"/etc/passwd")], "symbolic link"),
    "encrypted": ([("C2Seg_AB/train/msi/1.tiff", TIFF)], "encrypted"),
    "duplicate": ([("C2Seg_AB/train/msi/1.tiff", TIFF), ("C2Seg_AB/train/msi/1.tiff", TIFF)], "appears twice"),
    "bomb": ([("C2Seg_AB/train/hsi/1.tiff", bytes(8 << 20))], "compression-ratio cap"),
    # members each under the ratio floor, together a bomb (as overlapping-member bombs are)
    "many small": ([(f"C2Seg_AB/train/hsi/{i}.tiff", bytes(900 << 10)) for i in range(4)], "from a"),
}
