"""The GPU check of the paper recipe: the paper config on the synthetic AB pair, float32 against bf16.

One prepared script for a lent GPU machine (budget: minutes). It synthesises and prepares a
synthetic AB pair, trains the `paper` config for --steps steps twice with the same seed and data,
once in float32 (`--fp32`) and once under bf16 autocast (the kit's CUDA default), and reports
for each: steps/s (after --warmup steps), peak GPU memory (torch.cuda.max_memory_allocated), and
how the two loss curves agree (per-step seg and adversarial terms: largest absolute and relative
gap, and their correlation). Writes everything to --out (results.json and both runs' logs).

    python bench/gpu_recipe.py --out "$OUT"                 # on the GPU machine: 200 steps each
    python bench/gpu_recipe.py --device cpu --config tiny --steps 3 --warmup 1 --out /tmp/x   # a dry run

Figures from synthetic data say how the kit runs on the GPU, not what it scores on C2Seg.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

CURVES = ("seg", "ce", "dice", "adv_d0", "adv_d1")  # per-step terms compared between the runs


def read_log(path: Path) -> dict[int, dict]:
    """step -> the training record of that step (evaluation records left out)."""
    records = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "eval" not in r:
            records[r["step"]] = r
    return records


def agreement(a: dict[int, dict], b: dict[int, dict]) -> dict:
    """Per loss term, how far the two runs' curves are apart."""
    import numpy as np

    out = {}
    steps = sorted(set(a) & set(b))
    for term in CURVES:
        pairs = [(a[s][term], b[s][term]) for s in steps if term in a[s] and term in b[s]]
        if not pairs:
            continue
        x, y = np.array(pairs, dtype=np.float64).T
        gap = np.abs(x - y)
        out[term] = {"steps": len(pairs), "max_abs_gap": float(gap.max()), "median_abs_gap": float(np.median(gap)),
                     "max_rel_gap": float((gap / np.maximum(np.abs(x), 1e-12)).max()),
                     "final_fp32": float(x[-1]), "final_bf16": float(y[-1]),
                     "correlation": float(np.corrcoef(x, y)[0, 1]) if len(pairs) > 2 and x.std() and y.std() else None}
    return out


def timed_run(prep: Path, out: Path, args, amp: bool) -> dict:
    import torch

    from c2seg_baseline.train import TrainOptions, train

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    # the first --warmup steps (cuDNN autotuning, allocator growth) are timed apart from the rest
    t0 = time.perf_counter()
    train(TrainOptions(data=prep, track="AB", out=out, config=args.config, steps=args.steps, device=args.device,
                       seed=0, eval_every=args.steps, amp=amp, progress=False, stop_after=args.warmup))
    warm = time.perf_counter() - t0
    t1 = time.perf_counter()
    summary = train(TrainOptions(data=prep, track="AB", out=out, config=args.config, steps=args.steps,
                                 device=args.device, seed=0, eval_every=args.steps, amp=amp, progress=False,
                                 resume=True))
    if cuda:
        torch.cuda.synchronize()
    rest = time.perf_counter() - t1
    return {"amp_bf16": amp, "warmup_steps": args.warmup, "warmup_s": round(warm, 2),
            "steps_per_s": round((args.steps - args.warmup) / rest, 4),
            "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
            "target_miou": summary["metrics"].get("miou") if summary["metrics"] else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json, the data and both runs")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--config", default="paper")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10, help="steps timed apart (autotuning, allocator growth)")
    ap.add_argument("--scale", type=float, default=0.5, help="synthetic city size x nominal size")
    args = ap.parse_args()
    if not 1 <= args.warmup < args.steps:
        raise SystemExit("--warmup must be at least 1 and below --steps")

    import torch

    from c2seg_kit.prepare.pipeline import prepare
    from c2seg_kit.registry import TRACKS
    from c2seg_kit.synth.scenes import synthesize

    args.out.mkdir(parents=True, exist_ok=True)
    data, prep = args.out / "data", args.out / "prepared"
    if not (prep / "manifest.json").is_file():
        synthesize(data, TRACKS["AB"], scale=args.scale, seed=0, progress=False)
        prepare(data, TRACKS["AB"], prep, progress=False)  # the paper's preprocessing
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device
    print(f"{device}; config {args.config}; {args.steps} steps per run, synthetic AB at scale {args.scale}", flush=True)
    runs = {}
    for name, amp in (("fp32", False), ("bf16", True)):
        runs[name] = timed_run(prep, args.out / name, args, amp)
        print(f"  {name}: {runs[name]}", flush=True)
    logs = {name: read_log(args.out / name / "log.jsonl") for name in runs}
    curves = agreement(logs["fp32"], logs["bf16"])
    for term, c in curves.items():
        print(f"  {term:<7} max |fp32 - bf16| {c['max_abs_gap']:.4g} (relative {c['max_rel_gap']:.3g}), "
              f"correlation {c['correlation']}, final {c['final_fp32']:.4f} / {c['final_bf16']:.4f}")
    ratio = runs["bf16"]["steps_per_s"] / runs["fp32"]["steps_per_s"]
    print(f"  bf16 / fp32 speed: {ratio:.2f}x")
    results = {"device": device, "config": args.config, "steps": args.steps, "scale": args.scale, "runs": runs,
               "curves": curves, "bf16_over_fp32_speed": ratio, "torch": torch.__version__}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
