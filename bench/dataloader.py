"""DataLoader throughput of the baseline's datasets against a plain tifffile loop, on synthetic tiles.

Synthesizes a challenge-like tile distribution per track with the kit's own verb (AB: 128 px
tiles, BW: 256 px tiles), prepares it (tile cache), then times, in samples per second:

- ``tifffile loop``: a plain loop reading each train tile's three modality files and its label
  with ``tifffile.imread`` and stacking the modalities (as TorchGeo's C2Seg draft reads the tiles:
  one file per modality, concatenated on the band axis), no normalisation, one process; and the
  same loop turning each image into C x H x W float32, the datasets' layout (a transpose of the
  pixel-interleaved files: the copy every C x H x W reader pays);
- ``C2SegTiles`` (the distributed tiles: raw values, then per-sample min-max) and ``C2SegPrepared`` (the tile
  cache, its PCA and normalisation) through ``torch.utils.data.DataLoader`` with 0 and 2 workers.

Every reader goes over the same SAMPLES indices (the train tiles, repeated to reach SAMPLES), after
one untimed warm-up pass (the page cache holds the files in every run). Each figure is the
median of --runs runs; a run with workers includes starting them. Run by hand:

    python bench/dataloader.py [--runs 5] [--samples 96] [--batch 8] [--keep DIR]

How the datasets are built is in ``tiles_dataset`` / ``prepared_dataset`` alone.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from torch.utils.data import DataLoader, Subset

from c2seg_baseline.datasets import C2SegPrepared, C2SegTiles
from c2seg_kit.io.tile_checks import natural_key
from c2seg_kit.prepare.pipeline import prepare
from c2seg_kit.registry import MODALITIES, TRACKS
from c2seg_kit.synth.tile_sets import synthesize_tiles

#: scale per track: the source city is large enough for full-size tiles (AB 128 px, BW 256 px)
SCALE = {"AB": 0.4, "BW": 0.06}


def tiles_dataset(data: Path, track: str, normalise: str | None = "minmax"):
    return C2SegTiles(data, track=track, split="train", normalise=normalise)


def prepared_dataset(prepared: Path, track: str):
    return C2SegPrepared(prepared, city="source")


def tile_files(data: Path, track: str) -> list[tuple[list[Path], Path]]:
    """(modality files, label file) of each train tile, in id order, as they lie on disk."""
    train = data / TRACKS[track].tile_dir / "train"
    found: dict[str, dict[str, Path]] = {}
    for m in (*MODALITIES, "label"):
        found[m] = {p.stem: p for p in train.rglob(f"{m}/*.tif*")}
    ids = sorted(found["label"], key=natural_key)
    return [([found[m][i] for m in MODALITIES], found["label"][i]) for i in ids]


def time_plain(files, order: list[int], chw: bool = False) -> float:
    """The plain loop; ``chw``: each image also made C x H x W float32, the datasets' layout."""
    start = time.perf_counter()
    for i in order:
        paths, label = files[i]
        image = np.concatenate([tifffile.imread(p) for p in paths], axis=2)  # H x W x bands, pixel-interleaved
        if chw:
            image = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        mask = tifffile.imread(label)
        assert image.shape[-2:] == mask.shape if chw else image.shape[:2] == mask.shape
    return len(order) / (time.perf_counter() - start)


def time_loader(dataset, order: list[int], workers: int, batch: int) -> float:
    loader = DataLoader(Subset(dataset, order), batch_size=batch, num_workers=workers, shuffle=False)
    start = time.perf_counter()
    n = 0
    for sample in loader:
        n += len(sample["tile"])
    assert n == len(order)
    return n / (time.perf_counter() - start)


def bench_track(track: str, root: Path, runs: int, samples: int, batch: int) -> list[tuple[str, float, list[float]]]:
    data, prepared = root / f"{track}_tiles", root / f"{track}_prepared"
    if not data.exists():
        synthesize_tiles(data, TRACKS[track], scale=SCALE[track], seed=0, progress=False)
    if not prepared.exists():
        prepare(data, TRACKS[track], prepared, progress=False)
    files = tile_files(data, track)
    raw, tiles, cache = tiles_dataset(data, track, None), tiles_dataset(data, track), prepared_dataset(prepared, track)
    order = [i % len(files) for i in range(samples)]
    side = tifffile.imread(files[0][1]).shape
    print(f"{track}: {len(files)} train tiles of {side[0]} x {side[1]} px, {samples} samples a run, batch {batch}")
    cases = [("tifffile loop (1 process)", lambda: time_plain(files, order)),
             ("tifffile loop, C x H x W float32", lambda: time_plain(files, order, chw=True))]
    for name, ds in (("C2SegTiles raw", raw), ("C2SegTiles minmax", tiles), ("C2SegPrepared", cache)):
        for workers in (0, 2):
            cases.append((f"{name}, {workers} workers", lambda ds=ds, w=workers: time_loader(ds, order, w, batch)))
    results = []
    for name, run in cases:
        run()  # warm-up: page cache, lazy file handles
        rates = [run() for _ in range(runs)]
        results.append((name, statistics.median(rates), rates))
        print(f"  {name:32} {statistics.median(rates):9.1f} samples/s  (runs: {', '.join(f'{r:.0f}' for r in rates)})")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tracks", nargs="+", default=["AB", "BW"], choices=sorted(TRACKS))
    ap.add_argument("--keep", type=Path, help="Folder to keep (and reuse) the synthetic data in.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) in the main process")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for track in args.tracks:
            bench_track(track, root, args.runs, args.samples, args.batch)


if __name__ == "__main__":
    main()
