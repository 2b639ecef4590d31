"""`c2seg export --format mmseg`: a prepared cache as an mmsegmentation (1.x) dataset.

What OUT holds (a new or empty folder; it appears only when complete):

- ``img_dir/{train,val,test}/<name>.tif``: one float32 GeoTIFF per image, the kit's preprocessing
  applied (repair, HSI reduced by the city's PCA, per-band min-max normalisation to [0, 1]), the
  modalities stacked in the order of ``bands.txt``: HSI components, then MSI, then SAR. Written
  pixel-interleaved as GDAL writes GeoTIFFs, so ``tifffile.imread`` (mmcv's ``tifffile`` backend)
  gives H x W x C, as mmseg's pipelines expect, and GDAL reads C bands;
- ``ann_dir/{train,val}/<name>.png``: uint8 greyscale class ids as the kit has them, 0 =
  unlabelled, 1..13 = the classes. This is the convention mmseg's remote-sensing datasets
  (ISPRS Potsdam/Vaihingen, LoveDA) use with ``reduce_zero_label=True``: mmseg turns 0 into its
  ignore index 255 and 1..13 into 0..12 when it loads them, and writes its predictions 0-based,
  0..12, which ``c2seg pack --add-one`` turns back into 1..13;
- ``splits/{train,val,test}.txt``: the image names of each split, one a line (mmseg's ``ann_file``);
  train = the source city less the held-out part, val = the held-out part of the source city,
  test = the target city's images, without annotations;
- ``bands.txt``: the band names in stacking order; ``mmseg_dataset.py``: the dataset-config
  snippet that the command also prints.

Images: per tile for a tile cache, named by the tile id, so mmseg's per-image predictions of the
test split (``<id>.png``) are what ``c2seg pack`` reads; for a scene cache, fixed windows of the
track's tile side, non-overlapping with the last row and column snapped to the edge, named
``<city>_r<row>_c<col>`` by their pixel origin.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from c2seg_kit.classes import EVAL_CLASSES
from c2seg_kit.errors import InvalidDataError
from c2seg_kit.io.geotiff import write_geotiff
from c2seg_kit.outputs import claim_folder, publish_folder, temp_dir_in, write_text
from c2seg_kit.prepare.cache import PreparedData, WindowReads
from c2seg_kit.registry import MODALITIES
from c2seg_kit.submission.tile_readers import check_tile_id
from c2seg_kit.tiling import window_origins

SPLITS = ("train", "val", "test")
IMG_SUFFIX = ".tif"
SEG_MAP_SUFFIX = ".png"
CONFIG_FILE = "mmseg_dataset.py"


@dataclass
class Exported:
    out: Path
    layout: str
    bands: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    snippet: str = ""


def band_names(channels: dict[str, int]) -> list[str]:
    """The stacked bands' names in order: hsi_pc1.., msi_1.., sar_1.."""
    names = []
    for m in MODALITIES:
        stem = f"{m}_pc" if m == "hsi" else f"{m}_"
        names += [f"{stem}{i + 1}" for i in range(channels[m])]
    return names


def stacked(raster: WindowReads, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """The preprocessed modalities of one window, stacked C x H x W (float32) in MODALITIES order."""
    return np.concatenate([raster.read(m, r0, r1, c0, c1) for m in MODALITIES], axis=0).astype(np.float32, copy=False)


def _items(city, window: int) -> list[tuple[str, WindowReads, tuple[int, int, int, int], object]]:
    """(name, raster, window bounds, georef) for each image of a city."""
    items = []
    if city.layout == "tiles":
        for tile_id, tile in city.rasters():
            try:  # the id becomes a file name: a plain file stem only
                check_tile_id(tile_id)
            except ValueError as e:
                raise InvalidDataError(f"{city.path}: {e}") from None
            h, w = tile.shape
            items.append((tile_id, tile, (0, h, 0, w), tile.georef()))
        return items
    h, w = city.shape
    side = min(window, h, w)
    for r, c in window_origins(h, w, side, side):
        items.append((f"{city.name}_r{r}_c{c}", city, (r, r + side, c, c + side), None))
    return items


def held_out(names: list[str], fraction: float, seed: int) -> set[str]:
    """The names of the validation part: ``fraction`` of them (at least one when there are two or
    more), drawn with ``seed``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the validation fraction must be in [0, 1), got {fraction:g}")
    k = min(len(names) - 1, max(1, round(len(names) * fraction))) if fraction > 0 and len(names) > 1 else 0
    return set(random.Random(seed).sample(sorted(names), k))


def dataset_snippet(data_root: Path, bands: list[str], counts: dict[str, int]) -> str:
    """Python text for an mmseg 1.x config: the dataset settings of the three splits."""
    classes = tuple(c.name for c in EVAL_CLASSES)
    palette = [list(c.rgb) for c in EVAL_CLASSES]
    n = len(bands)
    lines = [
        "# C2Seg as an mmsegmentation 1.x dataset, written by `c2seg export --format mmseg`.",
        f"# {n} input bands in this order: {', '.join(bands)}",
        "# Values are already normalised to [0, 1]: data_preprocessor = dict(type='SegDataPreProcessor',",
        f"#     mean=[0.0] * {n}, std=[1.0] * {n}, bgr_to_rgb=False, pad_val=0, seg_pad_val=255)",
        "# Annotations: 0 = unlabelled, 1..13 = classes; reduce_zero_label=True makes them 255 (ignored)",
        "# and 0..12. Predictions come out 0..12: `c2seg pack PRED_DIR --add-one` makes them 1..13.",
        f"dataset_type = {'BaseSegDataset'!r}",
        f"data_root = {str(data_root)!r}",
        f"metainfo = dict(classes={classes!r},",
        f"                palette={palette!r})",
        "train_pipeline = [",
        "    dict(type='LoadImageFromFile', imdecode_backend='tifffile', to_float32=True),",
        "    dict(type='LoadAnnotations'),",
        "    dict(type='RandomFlip', prob=0.5),",
        "    dict(type='PackSegInputs'),",
        "]",
        "test_pipeline = [",
        "    dict(type='LoadImageFromFile', imdecode_backend='tifffile', to_float32=True),",
        "    dict(type='LoadAnnotations'),",
        "    dict(type='PackSegInputs'),",
        "]",
        "predict_pipeline = [",
        "    dict(type='LoadImageFromFile', imdecode_backend='tifffile', to_float32=True),",
        "    dict(type='PackSegInputs'),",
        "]",
    ]
    for split, pipeline in (("train", "train_pipeline"), ("val", "test_pipeline"), ("test", "predict_pipeline")):
        prefix = (f"dict(img_path='img_dir/{split}')" if split == "test" else
                  f"dict(img_path='img_dir/{split}', seg_map_path='ann_dir/{split}')")
        lines += [
            f"{split}_dataset = dict(  # {counts.get(split, 0)} images",
            "    type=dataset_type, data_root=data_root, metainfo=metainfo,",
            f"    data_prefix={prefix}, ann_file='splits/{split}.txt',",
            f"    img_suffix={IMG_SUFFIX!r}, seg_map_suffix={SEG_MAP_SUFFIX!r}, reduce_zero_label=True,",
            f"    pipeline={pipeline})",
        ]
    return "\n".join(lines) + "\n"


def _write_png(path: Path, label: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8), mode="L").save(path)


def export_mmseg(prepared_dir: str | os.PathLike, out: str | os.PathLike, *, val_fraction: float = 0.1,
                 seed: int = 0, progress: Callable[[int], None] | None = None) -> Exported:
    """Write the prepared cache at ``prepared_dir`` into the new or empty folder ``out`` as an
    mmsegmentation dataset (see the module)."""
    out = Path(out)
    claim_folder(out, verb="export", follow_link=False)
    with PreparedData(prepared_dir) as data:
        if not data.source.has_label:
            raise InvalidDataError(f"the source city {data.source.name} of {prepared_dir} has no labels to train on")
        window = data.track.tile_side
        bands = band_names(data.source.channels)
        if band_names(data.target.channels) != bands:
            raise InvalidDataError(f"{prepared_dir}: the two cities have different bands "
                                   f"({data.source.channels} and {data.target.channels})")
        source, target = _items(data.source, window), _items(data.target, window)
        val = held_out([name for name, *_ in source], val_fraction, seed)
        jobs = [("val" if item[0] in val else "train", *item) for item in source]
        jobs += [("test", *item) for item in target]
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = temp_dir_in(out.parent, prefix=f".{out.name}.partial-")
        try:
            names: dict[str, list[str]] = {s: [] for s in SPLITS}
            for split in SPLITS:
                (partial / "img_dir" / split).mkdir(parents=True)
                if split != "test":
                    (partial / "ann_dir" / split).mkdir(parents=True)
            for split, name, raster, (r0, r1, c0, c1), georef in jobs:
                write_geotiff(partial / "img_dir" / split / f"{name}{IMG_SUFFIX}", stacked(raster, r0, r1, c0, c1),
                              georef)
                if split != "test":
                    _write_png(partial / "ann_dir" / split / f"{name}{SEG_MAP_SUFFIX}", raster.read_label(r0, r1, c0, c1))
                names[split].append(name)
                if progress is not None:
                    progress(1)
            (partial / "splits").mkdir()
            for split in SPLITS:
                write_text(partial / "splits" / f"{split}.txt", "".join(f"{n}\n" for n in names[split]))
            write_text(partial / "bands.txt", "".join(f"{b}\n" for b in bands))
            counts = {s: len(names[s]) for s in SPLITS}
            snippet = dataset_snippet(out.resolve(), bands, counts)
            write_text(partial / CONFIG_FILE, snippet)
            publish_folder(partial, out, verb="export")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)  # only the folder this call created
            raise
        return Exported(out, data.layout, bands, counts, snippet)
