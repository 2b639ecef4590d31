"""Benchmark `c2seg predict` on a Wuhan-size synthetic prepared city with the tiny HighDAN.

Throughput (pixels per second) and peak resident memory of the `c2seg predict` process
(the goal is under 2 GB whatever the city's size: prediction holds a few window-high bands).
The prepared cache is written directly in its documented layout with random values (this
measures throughput and memory, not accuracy) and kept in --cache for later runs.

    python bench/predict.py                          # 6225 x 8670 (Wuhan), window 512
    python bench/predict.py --height 1024 --repeats 3 --window 256 --window 512

Each setting runs in a fresh `c2seg predict` process; the figures are medians over --repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

CHANNELS = {"hsi": 10, "msi": 4, "sar": 2}
CHUNK = 128


def write_city(path: Path, shape: tuple[int, int], seed: int, label: bool) -> None:
    h, w = shape
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        ds = {m: f.create_dataset(m, shape=(c, h, w), dtype=np.float32, chunks=(c, min(CHUNK, h), min(CHUNK, w)))
              for m, c in CHANNELS.items()}
        for r0 in range(0, h, 512):  # a band at a time: the generator's own memory stays small
            r1 = min(h, r0 + 512)
            for m, c in CHANNELS.items():
                ds[m][:, r0:r1] = rng.random((c, r1 - r0, w), dtype=np.float32)
        if label:
            f.create_dataset("label", data=rng.integers(1, 14, size=(h, w), dtype=np.uint8))


def make_cache(cache: Path, shape: tuple[int, int]) -> Path:
    prep = cache / f"BW-{shape[0]}x{shape[1]}"
    if (prep / "manifest.json").is_file():
        return prep
    prep.mkdir(parents=True, exist_ok=True)
    print(f"writing a {shape[0]} x {shape[1]} prepared city into {prep} ...", flush=True)
    write_city(prep / "beijing.h5", (256, 256), 0, True)
    write_city(prep / "wuhan.h5", shape, 1, False)
    manifest = {"format": "c2seg-prepared/1", "track": "BW", "source": "beijing", "target": "wuhan",
                "cities": {}, "options": {"note": "random values, bench/predict.py"}}
    (prep / "manifest.json").write_text(json.dumps(manifest))
    return prep


def make_checkpoint(cache: Path) -> Path:
    import torch

    from c2seg_baseline.checkpoint import make_state, save_checkpoint
    from c2seg_baseline.config import get_config
    from c2seg_baseline.model import HighDAN

    path = cache / "tiny.pt"
    if not path.is_file():
        torch.manual_seed(0)
        cfg = get_config("tiny")
        save_checkpoint(path, make_state(HighDAN(cfg), cfg, step=0, with_rng=False))
    return path


def run_once(checkpoint: Path, prep: Path, out: Path, window: int, batch: int | None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one `c2seg predict` process.

    CPU seconds (user + system) are reported beside wall time because a shared machine's
    wall time says more about the neighbours than about the code."""
    cmd = [sys.executable, "-c", "from c2seg_kit.cli import main; main()", "predict", "--checkpoint",
           str(checkpoint), "--data", str(prep), "--track", "BW", "--out", str(out), "--window", str(window),
           "--device", "cpu", "--quiet", "--force"] + ([] if batch is None else ["--batch-size", str(batch)])
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (ru_maxrss in KB on Linux)
    seconds = time.perf_counter() - started
    stdout, stderr = proc.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"c2seg predict failed:\n{stderr[-2000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=6225)
    ap.add_argument("--width", type=int, default=8670)
    ap.add_argument("--window", type=int, action="append", help="repeatable; default 512")
    ap.add_argument("--batch-size", type=int, default=None, help="default: predict's (1 on the CPU)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "c2seg-bench-predict")
    args = ap.parse_args()
    windows = args.window or [512]
    prep = make_cache(args.cache, (args.height, args.width))
    checkpoint = make_checkpoint(args.cache)
    pixels = args.height * args.width
    print(f"city {args.height} x {args.width} = {pixels / 1e6:.1f} Mpx, tiny HighDAN, CPU threads "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')}, {args.repeats} run(s) per setting, "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    rows = []
    for window in windows:
        runs = [run_once(checkpoint, prep, args.cache / "pred.h5", window, args.batch_size) for _ in range(args.repeats)]
        secs = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        rss = max(r[2] for r in runs)
        rows.append((window, secs, cpu, rss))
        print(f"  window {window}: {secs:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss:.0f} MB", flush=True)
    base = pixels / rows[0][1]
    print(f"{'window':>7} {'wall s':>8} {'Mpx/s':>8} {'vs first':>8} {'CPU s':>8} {'Mpx/CPU-s':>10} {'peak RSS MB':>12}")
    for window, secs, cpu, rss in rows:
        pps = pixels / secs
        print(f"{window:>7} {secs:>8.1f} {pps / 1e6:>8.3f} {pps / base:>7.2f}x {cpu:>8.1f} {pixels / cpu / 1e6:>10.3f} "
              f"{rss:>12.0f}")
    print("goal: peak RSS < 2048 MB:", "met" if max(r[3] for r in rows) < 2048 else "NOT met")


if __name__ == "__main__":
    main()
