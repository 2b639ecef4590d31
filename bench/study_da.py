"""A short study: does HighDAN's adaptation help on synthetic AB, and does its Dice term?

Synthesises an AB pair (c2seg_kit.synth.scenes; the target city has a shifted style), prepares it, then
trains three variants per seed with the same seed, steps and data, and scores each on the target
city (Berlin) with its hidden labels.h5:

- source-only: no adversarial terms, no target-side attention;
- HighDAN: the full method;
- HighDAN without Dice: cross-entropy only.

The training recipe is the authors' (the `paper` preset's train section: 128 px windows with
50 % overlap on the source, augmentation drawn once per window, a fresh random batch every
step, non-overlapping unaugmented target windows, Adam with poly decay) and evaluation uses
their tiling (--stitch authors), on the tiny network: the paper network takes ~40 s per step on
this machine's CPUs. No ImageNet initialisation (no weights can be downloaded here).

Prints the target mIoU per run, then per variant the mean, the sample standard deviation and
the range, and for HighDAN against each other variant the differences paired by seed: their mean
and spread, a paired t-test and an exact sign-flip (permutation) test over the seeds.

    python bench/study_da.py                          # 5 seeds x 3 variants
    python bench/study_da.py --steps 600 --seeds 0 1 2 3 4 5 6 7

Synthetic cities are not real ones: whatever this shows says little about the real benchmark.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

VARIANTS = {"source-only": {"source_only": True}, "HighDAN": {}, "HighDAN-noDice": {"no_dice": True}}


def recipe_config(path: Path, window: int) -> Path:
    """The tiny network on the paper preset's training recipe (see the module docstring)."""
    from c2seg_baseline.config import paper

    t = paper().train
    path.write_text(json.dumps({
        "base": "tiny", "name": "tiny-on-paper-recipe",
        "train": {"window": window, "stride": window // 2, "augment": t.augment, "sampling": t.sampling,
                  "target_windows": t.target_windows},
        "predict": {"stitch": "authors"},
    }))
    return path


def sign_flip_p(diffs: list[float]) -> float:
    """Exact two-sided p of the mean paired difference under random sign flips (2^n assignments)."""
    observed = abs(statistics.mean(diffs))
    flips = [abs(statistics.mean(s * d for s, d in zip(signs, diffs, strict=True)))
             for signs in itertools.product((1, -1), repeat=len(diffs))]
    return sum(f >= observed - 1e-15 for f in flips) / len(flips)


def spread(values: list[float]) -> str:
    """The sample standard deviation, or a note that it is undefined (one seed has no spread)."""
    return f"{statistics.stdev(values):.4f}" if len(values) > 1 else "n/a (one seed)"


def summary(results: dict[str, list[float]]) -> list[str]:
    """The study's closing table and paired comparisons, as printed lines."""
    n = len(results["HighDAN"])
    lines = [f"\n{'variant':<15} {'mean mIoU':>10} {'std':>14} {'min':>8} {'max':>8}   (n = {n})"]
    for name, vals in results.items():
        lines.append(f"{name:<15} {statistics.mean(vals):>10.4f} {spread(vals):>14} {min(vals):>8.4f} {max(vals):>8.4f}")
    for other in ("source-only", "HighDAN-noDice"):
        diffs = [b - a for a, b in zip(results[other], results["HighDAN"], strict=True)]
        line = f"HighDAN - {other}, paired by seed: mean {statistics.mean(diffs):+.4f}, std {spread(diffs)}"
        if n > 1:
            from scipy import stats

            t = stats.ttest_rel(results["HighDAN"], results[other])
            line += f"; paired t = {t.statistic:+.2f}, p = {t.pvalue:.3f}; sign-flip p = {sign_flip_p(diffs):.3f}"
        lines.append(line + f"; per seed {', '.join(f'{d:+.4f}' for d in diffs)}")
    return lines


def finished_run(out: Path, steps: int) -> dict | None:
    """The final evaluation of a run this study already finished (so a stopped study resumes), else None."""
    log = out / "log.jsonl"
    if not log.is_file():
        return None
    for line in reversed(log.read_text().splitlines()):
        record = json.loads(line)
        if record.get("step") == steps and "eval" in record:
            return record["eval"]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.25, help="synthetic city size x nominal size")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--window", type=int, default=128, help="training window (the authors' AB: 128)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic cities")
    ap.add_argument("--work", type=Path, default=None, help="folder for data and runs (default: a temp dir)")
    args = ap.parse_args()

    from c2seg_baseline.train import TrainOptions, train
    from c2seg_kit.prepare.cache import PreparedData
    from c2seg_kit.prepare.pipeline import prepare
    from c2seg_kit.registry import TRACKS
    from c2seg_kit.synth.scenes import synthesize

    work = args.work or Path(tempfile.mkdtemp(prefix="c2seg-study-da-"))
    data, prep = work / "data", work / "prepared"
    if not (prep / "manifest.json").is_file():
        synthesize(data, TRACKS["AB"], scale=args.scale, seed=args.data_seed, progress=False)
        prepare(data, TRACKS["AB"], prep, progress=False)  # the paper's: PCA per city, min-max
    config = recipe_config(work / "recipe.json", args.window)
    with PreparedData(prep) as p:
        print(f"synthetic AB at scale {args.scale}: source {p.source.shape}, target {p.target.shape}; tiny network, "
              f"the authors' recipe ({args.window} px windows), {args.steps} steps, batch 4, seeds {args.seeds}")

    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    started = time.perf_counter()
    for seed in args.seeds:
        for name, flags in VARIANTS.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out = work / "runs" / f"{name}-seed{seed}"
            metrics = finished_run(out, args.steps)
            if metrics is None:  # not run yet, or stopped part-way: this study's own part-run is started afresh
                if out.is_dir():
                    shutil.rmtree(out)
                metrics = train(TrainOptions(
                    data=prep, track="AB", out=out, config=str(config), steps=args.steps, device="cpu", seed=seed,
                    eval_every=args.steps, labels=data / "labels.h5", progress=False, **flags,
                ))["metrics"]
                took = f"{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU"
            else:
                took = "finished earlier, read from its log"
            results[name].append(metrics["miou"])
            print(f"  seed {seed} {name:<15} target mIoU {metrics['miou']:.4f}  OA {metrics['oa']:.4f}  ({took})",
                  flush=True)

    for line in summary(results):
        print(line)
    print(f"total {time.perf_counter() - started:.0f} s wall, {time.process_time():.0f} s CPU; runs in {work / 'runs'}")


if __name__ == "__main__":
    main()
