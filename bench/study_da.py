"""A short study: does HighDAN's adversarial adaptation help on synthetic AB? (tiny config)

Synthesises an AB pair (c2seg_kit.synth; the target city has a shifted style), prepares it,
then trains the tiny HighDAN twice per seed -- source-only (no adversarial terms, no target
attention) and full HighDAN -- with the same seed, steps and data, and scores each on the
target city (Berlin) with its hidden labels.h5. Prints the target mIoU per run, then the
mean and the spread (sample standard deviation, min..max) per variant and their difference.

    python bench/study_da.py                      # 3 seeds x 2 variants, ~15 min of a 2-core CPU
    python bench/study_da.py --steps 400 --seeds 0 1 2 3 4

Synthetic cities are not real ones: whatever this shows says little about the real benchmark.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.15, help="synthetic city size x nominal size")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic cities")
    ap.add_argument("--work", type=Path, default=None, help="folder for data and runs (default: a temp dir)")
    args = ap.parse_args()

    from c2seg_baseline.train import TrainOptions, train
    from c2seg_kit.prepare import prepare
    from c2seg_kit.registry import TRACKS
    from c2seg_kit.synth import synthesize

    work = args.work or Path(tempfile.mkdtemp(prefix="c2seg-study-da-"))
    data, prep = work / "data", work / "prepared"
    if not (prep / "manifest.json").is_file():
        synthesize(data, TRACKS["AB"], scale=args.scale, seed=args.data_seed, progress=False)
        prepare(data, TRACKS["AB"], prep, progress=False)
    from c2seg_kit.prepared import PreparedData

    with PreparedData(prep) as p:
        print(f"synthetic AB at scale {args.scale}: source {p.source.shape}, target {p.target.shape}; "
              f"tiny config, {args.steps} steps, batch {args.batch_size}, seeds {args.seeds}")

    variants = {"source-only": {"source_only": True}, "HighDAN": {}}
    results: dict[str, list[float]] = {v: [] for v in variants}
    started = time.perf_counter()
    for seed in args.seeds:
        for name, flags in variants.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out = work / "runs" / f"{name}-seed{seed}"
            summary = train(TrainOptions(
                data=prep, track="AB", out=out, config="tiny", steps=args.steps, device="cpu", seed=seed,
                eval_every=args.steps, batch_size=args.batch_size, labels=data / "labels.h5", progress=False,
                **flags,
            ))
            miou = summary["metrics"]["miou"]
            results[name].append(miou)
            print(f"  seed {seed} {name:<12} target mIoU {miou:.4f}  OA {summary['metrics']['oa']:.4f}  "
                  f"({time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU)", flush=True)

    print(f"\n{'variant':<12} {'mean mIoU':>10} {'std':>8} {'min':>8} {'max':>8}   (n = {len(args.seeds)})")
    for name, vals in results.items():
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        print(f"{name:<12} {statistics.mean(vals):>10.4f} {sd:>8.4f} {min(vals):>8.4f} {max(vals):>8.4f}")
    diffs = [b - a for a, b in zip(results["source-only"], results["HighDAN"], strict=True)]
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    print(f"HighDAN - source-only, paired by seed: mean {statistics.mean(diffs):+.4f}, std {sd:.4f}, "
          f"per seed {', '.join(f'{d:+.4f}' for d in diffs)}")
    print(f"total {time.perf_counter() - started:.0f} s wall, {time.process_time():.0f} s CPU; runs in {work / 'runs'}")


if __name__ == "__main__":
    main()
