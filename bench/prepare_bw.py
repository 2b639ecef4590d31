"""Benchmark: `c2seg synth` + `c2seg prepare` on a full-size synthetic BW pair.

Reports wall time and peak RSS of each command (run as a child process, so the figure is
the command's own). Goal: prepare's peak RSS under 3 GB for Beijing 13474 x 8706
with 116 HSI bands at 30 m.

    python bench/prepare_bw.py --scale 1 --workdir /tmp/c2seg-bench --runs 1
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    dt = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all children so far: run each measured command first
    return dt, max(peak_kb, before) / 1024**2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/c2seg-bench-bw"))
    p.add_argument("--runs", type=int, default=1, help="prepare runs (median reported)")
    p.add_argument("--keep", action="store_true", help="keep the files afterwards")
    args = p.parse_args()
    c2seg = [sys.executable, "-m", "c2seg_kit"]
    data, prep = args.workdir / "data", args.workdir / "prepared"
    shutil.rmtree(args.workdir, ignore_errors=True)
    # separate interpreters so each command's peak RSS is its own (RUSAGE_CHILDREN keeps the max)
    synth_s, synth_gb = timed([sys.executable, __file__, "--child", "synth", str(data), str(args.scale)])
    runs = [timed([sys.executable, __file__, "--child", "prepare", str(data), str(prep)]) for _ in range(args.runs)]
    size = sum(f.stat().st_size for f in data.iterdir()) / 1024**3
    print(f"scale {args.scale}: scene files {size:.1f} GB")
    print(f"synth   : {synth_s:8.1f} s   peak RSS {synth_gb:.2f} GB")
    print(f"prepare : {statistics.median(r[0] for r in runs):8.1f} s   peak RSS {max(r[1] for r in runs):.2f} GB"
          f"   (median of {len(runs)} runs: {[round(r[0], 1) for r in runs]})")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    del c2seg


def child(argv: list[str]) -> None:
    """Run one command in this fresh process and print its own peak RSS."""
    verb = argv[0]
    t0 = time.perf_counter()
    if verb == "synth":
        from c2seg_kit.registry import TRACKS
        from c2seg_kit.synth.scenes import synthesize

        synthesize(argv[1], TRACKS["BW"], scale=float(argv[2]), seed=0, progress=False)
    else:
        from c2seg_kit.prepare.pipeline import prepare
        from c2seg_kit.registry import TRACKS

        prepare(argv[1], TRACKS["BW"], argv[2], progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"  [{verb}] {time.perf_counter() - t0:.1f} s, own peak RSS {peak:.2f} GB", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
