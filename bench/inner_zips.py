"""What reading a tile zip with inner zips costs in temporary disk, memory and time.

A BW-like distribution, C2Seg_BW.zip, whose train split ships as inner zips (train/hsi.zip, ...),
is opened as a training job opens it: by the main process (a train and a test dataset: two stores
at once) and by forked DataLoader workers, each holding its store open. Reported: the bytes in
the temporary folder while everything is open (the copies of inner zips), the main process's
peak RSS, and the time to open. The inner zips are either compressed (deflate, as `zip -r`
writes them) or stored; the outer zip compresses its other members either way.

    python bench/inner_zips.py                      # 60 tiles of 128 px, 4 workers
    python bench/inner_zips.py --tiles 200 --workers 8 --runs 5

Run it against another checkout's kit with PYTHONPATH=that/checkout to compare.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import tifffile

BANDS = {"hsi": 116, "msi": 4, "sar": 2}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def peak_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def build(root: Path, tiles: int, size: int, inner_method: int) -> Path:
    """C2Seg_BW.zip: train split as inner zips (hsi, msi, sar, label), test split as tiles."""
    rng = np.random.default_rng(0)
    src = root / "src" / "C2Seg_BW"
    for split in ("train", "test"):
        for i in range(1, tiles + 1 if split == "train" else max(2, tiles // 10) + 1):
            for m, bands in BANDS.items():
                a = rng.integers(0, 4000, (size, size, bands)).astype(np.int16 if m == "hsi" else np.uint16)
                (src / split / m).mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(src / split / m / f"{i}.tiff", a if m != "sar" else a.astype(np.float32),
                                 photometric="minisblack", planarconfig="contig")  # pixel-interleaved, as GDAL
            if split == "train":
                (src / split / "label").mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(src / split / "label" / f"{i}.tiff", rng.integers(0, 14, (size, size)).astype(np.uint8))
    out = root / "C2Seg_BW.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted((src / "test").rglob("*.tiff")):
            zf.write(p, p.relative_to(src.parent).as_posix())
        for m in (*BANDS, "label"):
            inner = root / f"{m}.zip"
            with zipfile.ZipFile(inner, "w", inner_method) as iz:
                for p in sorted((src / "train" / m).glob("*.tiff")):
                    iz.write(p, f"{m}/{p.name}")
            zf.write(inner, f"C2Seg_BW/train/{m}.zip", compress_type=inner_method)
            inner.unlink()
    return out


def worker(path: str, barrier) -> None:
    from c2seg_kit.io.tiles import open_tiles
    from c2seg_kit.registry import TRACKS

    with open_tiles(path, TRACKS["BW"]) as tiles:
        tiles.splits["train"].read_tile(tiles.splits["train"].ids[0])
        barrier.wait()  # every worker holds its store open here
        barrier.wait()  # ... while the parent measures the folder


def measure(path: Path, workers: int) -> dict:
    from c2seg_kit.io.tiles import open_tiles
    from c2seg_kit.registry import TRACKS

    work = Path(tempfile.mkdtemp(prefix="bench-inner-"))
    tempfile.tempdir = str(work)  # where the stores put their copies (inherited by the workers)
    try:
        t0 = time.perf_counter()
        train = open_tiles(path, TRACKS["BW"])
        opened = time.perf_counter() - t0
        test = open_tiles(path, TRACKS["BW"])  # a second dataset of the same job
        main_only = folder_bytes(work)
        ctx = mp.get_context("fork")
        barrier = ctx.Barrier(workers + 1)
        procs = [ctx.Process(target=worker, args=(str(path), barrier)) for _ in range(workers)]
        for p in procs:
            p.start()
        barrier.wait()
        with_workers = folder_bytes(work)
        barrier.wait()
        for p in procs:
            p.join()
        train.close()
        test.close()
        left = folder_bytes(work)
        return {"open_s": opened, "main": main_only, "all": with_workers, "left": left, "rss": peak_rss()}
    finally:
        tempfile.tempdir = None
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def run_one(args, method: int, queue) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-inner-src-"))
    path = build(root, args.tiles, args.size, method)
    queue.put((path.stat().st_size, measure(path, args.workers)))
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=60)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    import c2seg_kit

    print(f"kit at {Path(c2seg_kit.__file__).parent}; {args.tiles} train tiles of {args.size} px, "
          f"2 stores in the main process + {args.workers} forked workers; median of {args.runs} runs")
    for name, method in (("deflate", zipfile.ZIP_DEFLATED), ("stored", zipfile.ZIP_STORED)):
        rows = []
        for _ in range(args.runs):  # each run in a fresh process: its peak RSS is its own
            queue = mp.get_context("fork").Queue()
            p = mp.get_context("fork").Process(target=run_one, args=(args, method, queue))
            p.start()
            size, row = queue.get()
            p.join()
            rows.append(row)
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        mib = 2**20
        print(f"inner zips {name:7}: archive {size / mib:6.1f} MiB; temporary copies {med['main'] / mib:6.1f} MiB "
              f"(main, 2 stores), {med['all'] / mib:6.1f} MiB (with workers), {med['left'] / mib:.1f} MiB left "
              f"after close; open {med['open_s']:.2f} s; main peak RSS {med['rss'] / mib:.0f} MiB")


if __name__ == "__main__":
    main()
