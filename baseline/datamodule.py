"""C2Seg as a Lightning DataModule over a prepared cache, and the way back to a submission.

::

    from c2seg_baseline.datamodule import C2SegDataModule, write_predictions
    dm = C2SegDataModule("prepared/ab", batch_size=8, window=128, stride=64)
    trainer.fit(model, datamodule=dm)          # batches: {"source": ..., "target": ...}
    outputs = trainer.predict(model, datamodule=dm)
    write_predictions(outputs, dm, "predictions.h5", method="my model")

- ``train_dataloader``: the source city's labelled windows (``"source"``) beside the target city's
  windows for adaptation (``"target"``, disjoint windows, no mask where the city has no labels),
  as one dict per step (Lightning's CombinedLoader, the longer stream setting the epoch);
- ``val_dataloader``: a held-out part of the source city that no training window touches (tile
  caches: a seeded ``val_fraction`` of the tiles; scene caches: a band of rows at the bottom);
- ``predict_dataloader``: the test (target) city, in windows that overlap by a quarter.

Samples are the datasets' (:mod:`c2seg_baseline.datasets`). ``predict_step`` must return the
batch's logits (B, 14, H, W) (output 0 "unlabelled", as HighDAN) or (B, 13, H, W) (classes
1..13), alone or as ``{"logits": ...}``; :func:`write_predictions` stitches them as the
baseline's blend does (windows weighted by :func:`c2seg_baseline.stitch.blend_weights`, argmax
over classes 1..13) into the city map and writes it with the kit's submission writers (a tile
cache: one map per test tile).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from c2seg_kit.classes import NUM_CLASSES
from c2seg_kit.errors import C2SegError
from c2seg_kit.prepare.cache import PreparedData
from c2seg_kit.registry import MODALITIES
from c2seg_kit.submission.tile_writers import tile_submission_writer
from c2seg_kit.submission.writers import submission_writer

from .datasets import C2SegPrepared
from .stitch import FIRST_CLASS, argmax_classes, blend_weights

try:
    import lightning as L
    from lightning.pytorch.utilities import CombinedLoader
except ImportError:  # pragma: no cover - exercised without the extra
    raise ImportError("C2SegDataModule needs the 'lightning' extra (lightning is missing): in a clone of the "
                      "repository pip install \".[lightning]\", or from the package index pip install "
                      "\"c2seg-kit[lightning]\"") from None

__all__ = ["C2SegDataModule", "write_predictions"]


def _collate(samples: list[dict]) -> dict:
    """The default collate, but tile ids stay a list of strings and a missing mask stays missing."""
    batch = torch.utils.data.default_collate([{k: v for k, v in s.items() if k != "tile"} for s in samples])
    batch["tile"] = [s["tile"] for s in samples]
    return batch


class C2SegDataModule(L.LightningDataModule):
    """A prepared cache (`c2seg prepare`, scene or tile layout) for ``lightning.Trainer``.

    ``batch_size``, ``num_workers``; ``window`` (default: the paper's training window for a
    scene cache, whole tiles for a tile cache) and ``stride`` (default ``window // 2``) of the
    source windows; the target's adaptation windows do not overlap. ``val_fraction`` of the source
    is held out for validation (0: no validation). ``augment``: None or ``"once"`` (a rotation
    and flips per window, drawn from ``seed``, as :class:`C2SegPrepared`). ``predict_window`` (default ``window``) and ``predict_overlap``
    (default a quarter of it) place the test city's windows.
    """

    def __init__(self, root: str | os.PathLike, *, batch_size: int = 8, num_workers: int = 0,
                 window: int | None = None, stride: int | None = None, val_fraction: float = 0.1,
                 augment: bool | str | None = None, seed: int = 0, modalities: Sequence[str] = MODALITIES,
                 predict_window: int | None = None, predict_overlap: int | None = None):
        super().__init__()
        if batch_size < 1 or num_workers < 0:
            raise ValueError("batch_size must be at least 1 and num_workers at least 0")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if augment not in (None, False, "once"):
            # Lightning never tells a dataset the epoch (and persistent workers would not hear it)
            raise ValueError(f"augment must be None or 'once' (drawn per window from the seed), got {augment!r}")
        self.root = root
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.val_fraction, self.augment, self.seed = float(val_fraction), augment, int(seed)
        self.modalities = tuple(modalities)
        with PreparedData(root) as data:
            self.layout, self.track = data.layout, data.track.name
        self.window = window if window is not None or self.layout == "tiles" else {"AB": 128, "BW": 256}[self.track]
        self.stride = stride if stride is not None or self.window is None else max(1, self.window // 2)
        self.predict_window = predict_window or self.window
        overlap = predict_overlap if predict_overlap is not None else (self.predict_window or 0) // 4
        if self.predict_window is not None and not 0 <= overlap < self.predict_window:
            raise ValueError(f"predict_overlap must be in [0, {self.predict_window}), got {overlap}")
        self.predict_stride = None if self.predict_window is None else self.predict_window - overlap
        self.source = self.target = self.val = self.test = None
        self.train_indices: list[int] = []
        self.val_indices: list[int] = []

    def _dataset(self, split: str, **kw) -> C2SegPrepared:
        return C2SegPrepared(self.root, split, self.modalities, **kw)

    def _held_out(self, source: C2SegPrepared) -> tuple[list[int], list[int]]:
        """(train, val) window indices of the source: no training window overlaps a validation one."""
        if self.val_fraction == 0:
            return list(range(len(source))), []
        if self.layout == "tiles":
            ids = sorted({t for t, _, _ in source.origins})
            n_val = max(1, round(self.val_fraction * len(ids))) if len(ids) > 1 else 0
            held = set(np.random.default_rng([self.seed, 1]).choice(ids, n_val, replace=False).tolist())
            val = [i for i, (t, _, _) in enumerate(source.origins) if t in held]
        else:
            h = source.city.shape[0]
            boundary = h - max(self.window, round(self.val_fraction * h))  # the held-out rows: [boundary, h)
            if boundary < self.window:
                raise C2SegError(f"the source city is {h} rows high: too few to hold out {self.val_fraction:.0%} "
                                 f"of it besides {self.window} px training windows (val_fraction=0 trains on all)")
            val = [i for i, (_, r0, _) in enumerate(source.origins) if r0 >= boundary]
            train = [i for i, (_, r0, _) in enumerate(source.origins) if r0 + self.window <= boundary]
            return train, val
        held_out = set(val)
        return [i for i in range(len(source)) if i not in held_out], val

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate"):
            self.source = self._dataset("train", window=self.window, stride=self.stride, augment=self.augment,
                                        seed=self.seed)
            self.train_indices, self.val_indices = self._held_out(self.source)
            self.val = self._dataset("train", window=self.window, stride=self.stride)
            self.target = self._dataset("test", window=self.window, stride=self.window, seed=self.seed + 1)
        if stage in (None, "predict", "test"):
            self.test = self._dataset("test", window=self.predict_window, stride=self.predict_stride)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          collate_fn=_collate, persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.seed) if shuffle else None)

    def train_dataloader(self):
        loaders = {"source": self._loader(Subset(self.source, self.train_indices), True),
                   "target": self._loader(self.target, True)}
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self):
        return self._loader(Subset(self.val, self.val_indices), False)

    def predict_dataloader(self):
        return self._loader(self.test, False)


def _logits(output) -> torch.Tensor:
    logits = output["logits"] if isinstance(output, dict) else output
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4 or logits.shape[1] not in (NUM_CLASSES, NUM_CLASSES + 1):
        raise ValueError(f"predict_step must return logits (B, {NUM_CLASSES + 1} or {NUM_CLASSES}, H, W), "
                         f"got {getattr(logits, 'shape', type(logits).__name__)}")
    if logits.shape[1] == NUM_CLASSES + 1:
        logits = logits[:, FIRST_CLASS:]
    return logits.detach().float().cpu()


def write_predictions(outputs: Iterable, datamodule: C2SegDataModule, out: str | os.PathLike, *,
                      method: str | None = None, team: str | None = None) -> dict:
    """Stitch ``trainer.predict``'s outputs (one per batch of ``predict_dataloader``, in order)
    into the test city's class map(s) and write the submission file `out` with the kit's writers.
    Returns ``{"out", "windows", "rasters"}``. Holds the test city's logit sums in memory
    (13 float32 values a pixel: about 0.5 GB for a 3,000 x 3,000 scene)."""
    test = datamodule.test
    if test is None:
        raise ValueError("the datamodule has no predict dataset: run trainer.predict with it first")
    # the blend's ramp: over the windows' overlap (whole tiles do not overlap)
    ramp = 0 if test.window is None else test.window - datamodule.predict_stride
    sums: dict[str | None, tuple[np.ndarray, np.ndarray]] = {}  # per raster: weighted logit sums, weight sums
    index = 0
    for output in outputs:
        logits = _logits(output)
        for k in range(logits.shape[0]):
            if index >= len(test):
                raise ValueError(f"more predictions than the {len(test)} test windows")
            tile_id, r0, c0, wh, ww = test.items[index]
            index += 1
            raster = test.city if tile_id is None else test.city.tile(tile_id)
            h, w = raster.shape
            if tuple(logits.shape[-2:]) != (wh, ww):
                raise ValueError(f"window {index - 1}: logits are {tuple(logits.shape[-2:])}, the window {(wh, ww)}")
            if tile_id not in sums:
                sums[tile_id] = (np.zeros((NUM_CLASSES, h, w), np.float32), np.zeros((h, w), np.float32))
            acc, wsum = sums[tile_id]
            weight = blend_weights(wh, ramp, ww, ramp)
            hh, cw = min(wh, h - r0), min(ww, w - c0)  # the part inside the raster (a padded window reaches past it)
            acc[:, r0:r0 + hh, c0:c0 + cw] += logits[k, :, :hh, :cw].numpy() * weight[:hh, :cw]
            wsum[r0:r0 + hh, c0:c0 + cw] += weight[:hh, :cw]
    if index != len(test):
        raise ValueError(f"{index} predictions for {len(test)} test windows: pass every batch of predict_dataloader")
    if datamodule.layout == "tiles":
        with tile_submission_writer(out, datamodule.track, team=team, method=method,
                                    expected_ids=test.city.ids) as writer:
            for tile_id in test.city.ids:
                writer.write_tile(tile_id, argmax_classes(sums[tile_id][0]))
    else:
        acc, _ = sums[None]
        with submission_writer(out, acc.shape[1:], datamodule.track, team=team, method=method) as sink:
            sink(0, argmax_classes(acc))
    return {"out": str(out), "windows": index, "rasters": len(sums)}
