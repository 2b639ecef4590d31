"""Whole-city prediction with a HighDAN, and the evaluation during training that shares it.

Windows may be larger than the training patches (the network is fully convolutional); how they
tile a raster and how their outputs are stitched is stitch.py's job. This module decides the
settings and where the classes go:

- :func:`tiling_for`: the stitch, window and overlap of a run (its config's ``predict`` section,
  overridden by the command line). Training evaluates with exactly these settings, the same batch
  size rule and the same code (:func:`predict_city`), so the best mIoU a run prints is what
  `predict` + `score` give for its best.pt;
- :func:`predict_city` -> a sink (the submission file, or the confusion matrix during training);
- :func:`predict_to_file`: a checkpoint (the kit's, or the authors' generator file with its D0
  beside it), checked against the track and the prepared cache (provenance.py), into a submission.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from c2seg_kit.errors import C2SegError
from c2seg_kit.metrics import ConfusionMatrix
from c2seg_kit.registry import Track
from c2seg_kit.submission.readers import open_labels
from c2seg_kit.submission.tile_writers import tile_submission_writer
from c2seg_kit.submission.writers import submission_writer

from . import checkpoint as ckpt
from .config import HighDANConfig
from .devices import place_model, resolve_device, set_threads
from .provenance import check_matches
from .resume import BEST, LAST
from .stitch import (
    BLEND_WINDOW,
    FIRST_CLASS,
    STITCHES,
    Tiling,
    blend_weights,
    blended_logit_sums,
)
from .windows import open_prepared

__all__ = ["FIRST_CLASS", "Tiling", "blend_weights", "blended_rows", "default_batch_size",
           "evaluate_city", "evaluate_target", "predict_city", "predict_to_file", "prepared_to_file", "target_labels",
           "tiling_for"]


def tiling_for(cfg: HighDANConfig, track: str, *, stitch: str | None = None, window: int | None = None,
               overlap: int | None = None) -> Tiling:
    """The run's tiling: the config's ``predict`` section, the command line's choices over it.

    Unset, the window is the config's (for its own stitch), else 512 for ``blend`` and the
    training window of `track` for ``authors``; the blend's overlap is a quarter of the window.
    """
    p = cfg.predict
    stitch = stitch or p.stitch
    same = stitch == p.stitch  # the config's window and overlap belong to its own stitch
    if window is None:
        window = p.window if same and p.window is not None else (
            cfg.train.for_track(track, "window") if stitch == "authors" else BLEND_WINDOW)
    if overlap is None:
        overlap = p.overlap if same and p.overlap is not None else (0 if stitch == "authors" else window // 4)
    return Tiling(stitch, int(window), int(overlap)).check()


def default_batch_size(device: torch.device) -> int:
    """Windows per forward pass: 4 on CUDA, 1 on the CPU (a 512 x 512 window of the tiny net needs
    ~0.3 GB of activations there, and batching buys little speed). Training evaluates with it too."""
    return 4 if device.type == "cuda" else 1


@torch.no_grad()
def blended_rows(model, city, *, window: int = 512, overlap: int = 128, batch_size: int = 4,
                 device: str | torch.device = "cpu", amp: bool = False, progress: bool = True,
                 desc: str = "predict"):
    """Yield (r0, float32 (13, rows, W)): the blended logits of classes 1..13, top to bottom.

    Consecutive, non-overlapping row blocks cover the city; each is final when yielded.
    """
    model.eval()
    tiling = Tiling("blend", window, overlap).check()
    for r0, acc, wsum in blended_logit_sums(model, city, tiling, batch_size, torch.device(device), amp,
                                            progress, desc):
        yield r0, acc / wsum[None]


@torch.no_grad()
def predict_city(model, city, *, sink: Callable[[int, np.ndarray], None], window: int = 512, overlap: int = 128,
                 stitch: str = "blend", batch_size: int = 4, device: str | torch.device = "cpu", amp: bool = False,
                 progress: bool = True, desc: str = "predict") -> None:
    """Predict every pixel of one raster (a PreparedCity, or one tile); call sink(r0, uint8 rows
    with values 1..13) with consecutive row blocks from top to bottom. Target-side attention on."""
    model.eval()
    tiling = Tiling(stitch, window, overlap).check()
    for r0, rows in STITCHES[stitch](model, city, tiling, batch_size, torch.device(device), amp, progress, desc):
        sink(r0, rows)


def _settings(tiling: Tiling) -> dict:
    return {"stitch": tiling.stitch, "window": tiling.window, "overlap": tiling.overlap}


# --- evaluation ---------------------------------------------------------------------------------

class ConfusionSink:
    """Accumulates the confusion matrix of predicted rows against label rows."""

    def __init__(self, labels: Callable[[int, int], np.ndarray], cm: ConfusionMatrix | None = None):
        self.labels = labels  # labels(r0, r1) -> uint8 rows
        self.cm = cm if cm is not None else ConfusionMatrix()

    def __call__(self, r0: int, rows: np.ndarray) -> None:
        self.cm.update(self.labels(r0, r0 + rows.shape[0]), rows)

    def scores(self) -> dict:
        return self.cm.scores()


def evaluate_city(model, city, labels: Callable[[int, int], np.ndarray], **kw) -> dict:
    """The kit's scores (c2seg_kit.metrics) of the model's prediction of one raster."""
    sink = ConfusionSink(labels)
    predict_city(model, city, sink=sink, **kw)
    return sink.scores()


def evaluate_target(model, city, labels: Callable[[str | None], Callable[[int, int], np.ndarray]],
                    tiling: Tiling, **kw) -> dict:
    """Scores over every raster of a prepared city (the scene, or every tile: each pixel counts once
    per tile, as tile submissions are scored); labels(tile id) -> labels(r0, r1) of that raster."""
    cm = ConfusionMatrix()
    for tile_id, raster in city.rasters():
        predict_city(model, raster, sink=ConfusionSink(labels(tile_id), cm), **_settings(tiling), **kw)
    return cm.scores()


def target_labels(labels_file: Path | None, target, track: Track):
    """labels(tile id) -> labels(r0, r1) -> uint8 rows of one raster of the target city, from
    `labels_file` (a scene or tile-layout labels.h5, read by the kit's safe readers) when given,
    else from the prepared city itself; None when no labels are known."""
    if labels_file is not None:
        tiles = getattr(target, "layout", "scene") == "tiles"
        with open_labels(labels_file) as lab:
            if lab.track != track.name:
                raise C2SegError(f"{labels_file} holds {lab.track} labels, not {track.name}")
            if (lab.layout == "tiles") != tiles:
                raise C2SegError(f"{labels_file} holds {lab.layout} labels; the prepared target city is "
                                 f"{'tiles' if tiles else 'a scene'}")
            if tiles:
                return _tile_labels(lab, target, labels_file)
            full = lab.read()
        if tuple(full.shape) != tuple(target.shape):
            raise C2SegError(f"{labels_file}: label shape {full.shape} != target city shape {target.shape}")
        return lambda tile_id: lambda r0, r1: full[r0:r1]
    if target.has_label:
        def of(tile_id):
            raster = target if tile_id is None else target.tile(tile_id)
            width = raster.shape[1]
            return lambda r0, r1: raster.read_label(r0, r1, 0, width)
        return of
    return None


def _tile_labels(lab, target, labels_file: Path):
    """A tile-layout labels file's tiles, which must be the prepared test tiles, shapes and all."""
    if set(lab.ids) != set(target.ids):
        missing, extra = sorted(set(target.ids) - set(lab.ids)), sorted(set(lab.ids) - set(target.ids))
        raise C2SegError(f"{labels_file} does not hold the prepared test tiles: {len(missing)} missing"
                         f"{' (e.g. ' + missing[0] + ')' if missing else ''}, {len(extra)} others"
                         f"{' (e.g. ' + extra[0] + ')' if extra else ''}")
    wrong = next((t for t in target.ids if tuple(lab.shapes[t]) != tuple(target.shapes[t])), None)
    if wrong is not None:
        raise C2SegError(f"{labels_file}: tile {wrong} is {lab.shapes[wrong]}, the prepared tile {target.shapes[wrong]}")
    tiles = dict(lab.iter_tiles())  # uint8, one byte per test pixel
    return lambda tile_id: lambda r0, r1: tiles[tile_id][r0:r1]


# --- predict to a file --------------------------------------------------------------------------

def missing_checkpoint(path: Path) -> None:
    """A missing checkpoint (or a run folder given instead of one) is a one-line error that names the
    run's checkpoint that does exist: a run without target labels writes last.pt and no best.pt."""
    if path.is_file():
        return
    folder = path if path.is_dir() else path.parent
    there = [folder / name for name in (BEST, LAST) if (folder / name).is_file()]
    if path.is_dir():
        what = f"{path} is a folder, not a checkpoint"
    else:
        what = f"checkpoint not found: {path}"
    if there:
        why = "" if (folder / BEST).is_file() else f" (a run writes {BEST} only when it knows the target labels)"
        raise C2SegError(f"{what}; {folder} holds {there[0].name}: --checkpoint {there[0]}{why}")
    if path.is_dir():
        raise C2SegError(f"{what}; it holds no {BEST} or {LAST}")


def load_for_prediction(path: str | os.PathLike, device: torch.device):
    """(model, config, run record) from a kit checkpoint or the authors' generator file
    (importer.py: their D0 file beside it; no run record)."""
    from .importer import is_authors_generator, load_authors_files

    missing_checkpoint(Path(path))
    state = ckpt.load_file(path, "HighDAN checkpoint")
    if is_authors_generator(state):
        model = load_authors_files(path, state)
        return model.to(device).eval(), model.cfg, None
    state = ckpt.check_state(state, path)
    model, cfg = ckpt.build_model(state, path=path)
    return model.to(device).eval(), cfg, state.get("run") or {}


def _predict_tiles(model, city, out, track: str, method: str, kw: dict) -> tuple[None, int]:
    """Every test tile of a tile cache, one tile at a time, into a tile-layout submission holding
    exactly the cache's tile ids (each at its tile's shape); returns (None, pixels)."""
    pixels = 0
    bar = tqdm(total=len(city.ids), desc=f"predict {city.name}", unit="tile", disable=not kw["progress"],
               leave=False, dynamic_ncols=True)
    with bar, tile_submission_writer(out, track, method=method, expected_ids=city.ids) as writer:
        for tile_id, raster in city.rasters():
            tile = np.empty(raster.shape, np.uint8)

            def sink(r0: int, rows: np.ndarray, tile=tile) -> None:
                tile[r0:r0 + rows.shape[0]] = rows

            predict_city(model, raster, sink=sink, **{**kw, "progress": False})
            writer.write_tile(tile_id, tile)
            pixels += tile.size
            bar.update(1)
    return None, pixels


def predict_to_file(checkpoint: str | os.PathLike, data: str | os.PathLike, track: str,
                    out: str | os.PathLike, *, stitch: str | None = None, window: int | None = None,
                    overlap: int | None = None, batch_size: int | None = None, device: str = "auto",
                    amp: bool = True, method: str | None = None, progress: bool = True,
                    threads: int | None = None) -> dict:
    """Predict the target city of a prepared track into a submission file; returns a summary.

    Unset, the stitch, window and overlap are the checkpoint's (:func:`tiling_for`), the batch size
    :func:`default_batch_size`; bf16 autocast on CUDA unless `amp` is off (as training evaluates).
    """
    if batch_size is not None and batch_size < 1:
        raise C2SegError("--batch-size must be at least 1")
    set_threads(threads)
    dev = resolve_device(device)
    model, cfg, record = load_for_prediction(checkpoint, dev)
    model = place_model(model, dev)
    with open_prepared(data, track) as prepared:
        name = prepared.track.name
        check_matches(record, cfg.model.in_channels, prepared, name, checkpoint, data)
        tiling = tiling_for(cfg, name, stitch=stitch, window=window, overlap=overlap)
        return prepared_to_file(model, prepared, out, tiling=tiling, method=method or f"HighDAN ({cfg.name})",
                                batch_size=batch_size or default_batch_size(dev), device=dev, amp=amp,
                                progress=progress)


def prepared_to_file(model, prepared, out: str | os.PathLike, *, tiling: Tiling, method: str, batch_size: int,
                     device: torch.device, amp: bool, progress: bool) -> dict:
    """Predict the target city of an open prepared cache (every test tile, or the scene) with
    `model` (anything called as a HighDAN is: ``model(hsi, msi, sar, target=True)`` -> logits)
    into a submission file; returns a summary."""
    name = prepared.track.name
    city = prepared.target
    kw = dict(**_settings(tiling), batch_size=batch_size, device=device, amp=amp, progress=progress)
    started = time.perf_counter()
    if prepared.layout == "tiles":
        shape, pixels = _predict_tiles(model, city, out, name, method, kw)
    else:
        with submission_writer(out, city.shape, name, method=method) as sink:
            predict_city(model, city, sink=sink, desc=f"predict {city.name}", **kw)
        shape, pixels = city.shape, city.shape[0] * city.shape[1]
    seconds = time.perf_counter() - started
    tiles = len(city.ids) if prepared.layout == "tiles" else None
    return {"out": str(out), "shape": shape, "tiles": tiles, "pixels": pixels, "seconds": seconds,
            "pixels_per_second": pixels / max(seconds, 1e-9), "tiling": _settings(tiling)}
