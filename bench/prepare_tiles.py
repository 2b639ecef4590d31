"""Benchmark: `c2seg prepare` on a synthetic challenge tile set against reading the same bytes.

Synthesises a tile set once (`c2seg synth --layout tiles`: AB at --scale 1 is the real count,
273 + 140 tiles of 128 px with 242 + 4 + 2 bands), then runs, interleaved, --runs times each:
`find C2Seg_XX -type f -exec cat {} + > /dev/null` (the time to read the bytes) and `prepare`
in a fresh interpreter (its wall time and its own peak RSS), plus `prepare --pca-sample N`
when asked. Reports medians side by side and the ratio to the read time. Goals:
prepare within 2x of the read time, peak RSS under 1 GB.

    python bench/prepare_tiles.py --track AB --scale 1 --runs 3
    python bench/prepare_tiles.py --track BW --scale 0.25 --runs 3 --pca-sample 200000

Both commands read from the page cache once the first run has warmed it (the machine's memory
permitting): the figures compare work, not disk speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def read_time(root: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(f"find '{root}' -type f -exec cat {{}} + > /dev/null", shell=True, check=True)
    return time.perf_counter() - t0


def decode_time(data: Path, track: str) -> float:
    """One pass of the kit's tile reader over every tile (a lower bound for any pass over the tiles)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--decode", str(data), track], check=True)
    return time.perf_counter() - t0


def prepare_child(data: Path, out: Path, track: str, pca_sample: str, threads: int | None) -> dict:
    """Run prepare in a fresh interpreter; returns its wall time and own peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", str(data), str(out), track, pca_sample],
                          check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return {"wall": wall, **result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--track", choices=["AB", "BW"], default="AB")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--pca-sample", default=None, help="also time prepare --pca-sample N")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads for prepare (default: the library's own choice, all cores)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/c2seg-bench-tiles"))
    p.add_argument("--keep", action="store_true", help="keep the synthetic tiles for another run")
    args = p.parse_args()
    data = args.workdir / f"{args.track}-{args.scale:g}"
    root = data / f"C2Seg_{args.track}"
    if not root.is_dir():
        shutil.rmtree(data, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "c2seg_kit", "synth", str(data), "--track", args.track, "--layout",
                        "tiles", "--scale", str(args.scale), "--quiet"], check=True, capture_output=True)
        print(f"synth: {time.perf_counter() - t0:.1f} s")
    files = [f for f in root.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    tiles = {split: len(list((root / split / "msi").glob("*.tif*"))) for split in ("train", "test")}
    print(f"{args.track} tiles at scale {args.scale:g}: {tiles['train']} train + {tiles['test']} test, "
          f"{len(files)} files, {size / 1e9:.2f} GB")
    variants = {"all": "all"} | ({f"sample {args.pca_sample}": args.pca_sample} if args.pca_sample else {})
    reads: list[float] = []
    decodes: list[float] = []
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    read_time(root)  # warm the page cache once, for both sides alike
    for i in range(args.runs):
        reads.append(read_time(root))
        decodes.append(decode_time(data, args.track))
        for name, sample in variants.items():
            runs[name].append(prepare_child(data, args.workdir / "prepared", args.track, sample, args.threads))
        print(f"  run {i + 1}: cat {reads[-1]:.2f} s; decode {decodes[-1]:.2f} s; "
              + "; ".join(f"prepare ({n}) {r[-1]['wall']:.1f} s, {r[-1]['peak_rss_gb']:.2f} GB" for n, r in runs.items()),
              flush=True)
    cat = statistics.median(reads)
    print(f"read (cat > /dev/null): {cat:8.2f} s  ({size / cat / 1e9:.2f} GB/s)  median of {len(reads)}")
    decode = statistics.median(decodes)
    print(f"decode every tile once (the kit's reader, no computation): {decode:8.2f} s = {decode / cat:5.1f}x the read time")
    for name, r in runs.items():
        wall = statistics.median(x["wall"] for x in r)
        peak = max(x["peak_rss_gb"] for x in r)
        print(f"prepare --pca-sample {name:>14}: {wall:8.2f} s = {wall / cat:5.1f}x the read time; "
              f"peak RSS {peak:.2f} GB (median of {len(r)}: {[round(x['wall'], 1) for x in r]})")
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)


def child(data: str, out: str, track: str, pca_sample: str) -> None:
    from c2seg_kit.prepare.pipeline import PrepareOptions, prepare
    from c2seg_kit.registry import TRACKS

    options = PrepareOptions(pca_sample=None if pca_sample == "all" else int(pca_sample))
    t0 = time.perf_counter()
    prepare(data, TRACKS[track], out, options, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_gb": peak}))


def decode(data: str, track: str) -> None:
    from c2seg_kit.io.tiles import open_tiles
    from c2seg_kit.registry import TRACKS

    with open_tiles(data, TRACKS[track]) as tiles:
        for split in tiles.splits.values():
            for tile_id in split.ids:
                split.read_tile(tile_id)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    elif len(sys.argv) > 1 and sys.argv[1] == "--decode":
        decode(*sys.argv[2:4])
    else:
        main()
