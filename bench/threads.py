"""Benchmark torch's CPU thread count: 8 tiny training steps and a predict, per --threads value.

Each run is a fresh `c2seg train-baseline --config tiny --steps 8` process and then a fresh
`c2seg predict` of its last.pt on a small random prepared BW cache (bench/predict.py's), with
`--threads N`; thread counts alternate (1, 2, 1, 2, ...) so that load from other processes hits
each alike. Reported per thread count, medians over --repeats: the wall time of each command
(start-up included, as a user waits for it) and the time of the work itself (the steps' seconds
in log.jsonl; the seconds predict reports).

    python bench/threads.py                      # threads 1 and 2, 5 repeats each
    python bench/threads.py --threads 1 2 4 --repeats 3

Measured 2026-12-07 on the 2-CPU dev machine shared with seven other jobs (load average 11-15),
3 alternating repeats each (the run was cut after them: a two-thread repeat took 6-9 minutes),
medians:
    threads 1: train-baseline  38.6 s (steps  16.0 s), predict 15.1 s (work  5.8 s)
    threads 2: train-baseline 384.3 s (steps 354.0 s), predict 33.5 s (work 21.3 s)
Two threads on two busy CPUs: 10x the wall time of training (22x its steps), 2.2x that of predict
(3.7x its work). Not measured: an idle machine, where two threads may well be faster. The default
rule (baseline/devices.py: one thread less than the usable CPUs) follows the loaded case, which is
how this machine runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict import make_cache  # noqa: E402  (bench/predict.py: a random prepared BW cache)

CLI = [sys.executable, "-c", "from c2seg_kit.cli import main; main()"]


def timed(cmd: list[str]) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # --threads decides
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return wall, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=512, help="the target city's side in pixels (predicted)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "c2seg-bench-threads")
    args = ap.parse_args()

    prep = make_cache(args.cache, (args.size, args.size))
    print(f"usable CPUs: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.1f}", flush=True)
    results: dict[int, dict[str, list[float]]] = {n: {k: [] for k in ("train", "steps", "predict", "work")}
                                                  for n in args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for n in args.threads:
                run = Path(tmp) / f"run-{n}-{rep}"
                wall, _ = timed([*CLI, "train-baseline", "--prepared", str(prep), "--track", "BW", "--out", str(run),
                                 "--config", "tiny", "--steps", str(args.steps), "--device", "cpu", "--threads",
                                 str(n), "--progress-every", "0", "--no-progress"])
                steps = sum(json.loads(line).get("sec", 0.0) for line in (run / "log.jsonl").read_text().splitlines())
                pwall, out = timed([*CLI, "predict", "--checkpoint", str(run / "last.pt"), "--prepared", str(prep),
                                    "--track", "BW", "--out", str(run / "p.h5"), "--device", "cpu", "--threads",
                                    str(n), "--no-progress"])
                work = float(out.split(" s, ")[0].rsplit(", ", 1)[-1])  # "wrote ... (..., 12.3 s, ... px/s)"
                for k, v in (("train", wall), ("steps", steps), ("predict", pwall), ("work", work)):
                    results[n][k].append(v)
                print(f"repeat {rep + 1} threads {n}: train-baseline {wall:6.1f} s (steps {steps:6.1f} s), "
                      f"predict {pwall:6.1f} s (work {work:6.1f} s); load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"medians over {args.repeats} repeats ({args.steps} tiny steps; predict of {args.size} x {args.size} px):")
    for n, r in results.items():
        med = {k: statistics.median(v) for k, v in r.items()}
        print(f"  threads {n}: train-baseline {med['train']:6.1f} s (steps {med['steps']:6.1f} s), "
              f"predict {med['predict']:6.1f} s (work {med['work']:6.1f} s)")


if __name__ == "__main__":
    main()
