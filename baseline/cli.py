"""`c2seg train-baseline` and `c2seg predict`: the HighDAN baseline from the command line
(registered with the core CLI through the ``c2seg.commands`` entry points in pyproject.toml).

The modules that import torch are imported inside the commands: `c2seg --help` loads this module
for the verbs' one-line help, and on the light install a missing 'baseline' extra must surface
as the core CLI's one-line message, not at import.
"""

from __future__ import annotations

from pathlib import Path

import click

from c2seg_kit.cli.options import track_option
from c2seg_kit.errors import C2SegError

DEVICE_HELP = "auto = CUDA when available, else CPU."


def _existing_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise C2SegError(f"{what} {path} does not exist or is not a folder")
    return path


@click.command("train-baseline")
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="Prepared cache (the output of `c2seg prepare`).")
@track_option()
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Run folder: last.pt, best.pt, log.jsonl, config.json.")
@click.option("--config", default=None,
              help="paper (default), tiny, or a JSON file overriding a preset. On --resume: the run's own.")
@click.option("--steps", type=int, default=None,
              help="Length of the schedule (poly decay ends here). Default: the config's (AB 6000, BW 1000).")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Runs on the CPU repeat exactly under a seed.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt, exactly.")
@click.option("--eval-every", type=int, default=None,
              help="Evaluate on the target city every N steps (when its labels are known). Default: 5 times per run.")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Target labels.h5, when the prepared target city has no label.")
@click.option("--source-only", is_flag=True, help="Ablation: no adversarial terms, no target-side attention.")
@click.option("--no-dice", is_flag=True, help="Ablation: cross-entropy only.")
@click.option("--batch-size", type=int, default=None, help="Windows per step per process (paper: 4).")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--stop-after", type=int, default=None,
              help="Stop at this step without shortening the schedule; continue later with --resume.")
@click.option("--fp32", is_flag=True, help="On CUDA, train in float32 instead of bf16 autocast.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_baseline(data, track, out, config, steps, device, seed, resume, eval_every, labels, source_only,
                   no_dice, batch_size, workers, stop_after, fp32, quiet):
    """Train HighDAN on a prepared track (adversarial adaptation from source to target city).

    Writes checkpoints (last.pt; best.pt by target mIoU when target labels are known) and a
    per-step log (log.jsonl) into --out. Under torchrun, trains data-parallel (only rank 0
    writes). Example:

    \b
        c2seg train-baseline --data prep --track AB --out runs/ab --config tiny --steps 300
    """
    # Imported here, not at the top: it needs torch (light install; see the module docstring).
    from .train import TrainOptions, train

    _existing_dir(data, "prepared data folder")
    if labels is not None and not labels.is_file():
        raise C2SegError(f"labels file {labels} not found")
    if workers < 0:
        raise C2SegError("--workers must be 0 or more")
    if eval_every is not None and eval_every < 1:
        raise C2SegError("--eval-every must be at least 1")
    if stop_after is not None and stop_after < 1:
        raise C2SegError("--stop-after must be at least 1")
    summary = train(TrainOptions(
        data=data, track=track, out=out, config=config, steps=steps, device=device, seed=seed,
        resume=resume, eval_every=eval_every, source_only=source_only, no_dice=no_dice,
        batch_size=batch_size, workers=workers, labels=labels, stop_after=stop_after,
        amp=False if fp32 else None, progress=not quiet,
    ))
    line = f"step {summary['step']}/{summary['total_steps']} -> {summary['out']}"
    if summary["metrics"]:
        line += f"; target mIoU {summary['metrics']['miou']:.4f}"
    if summary["best"]:
        line += f" (best {summary['best']['miou']:.4f} at step {summary['best']['step']})"
    click.echo(line)


@click.command("predict")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="A checkpoint written by train-baseline (last.pt / best.pt).")
@click.option("--data", "data", required=True, type=click.Path(path_type=Path), help="Prepared cache.")
@track_option(help="The track whose target city is predicted.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Submission file to write.")
@click.option("--window", type=int, default=512, show_default=True,
              help="Window size in pixels (a multiple of 32; may exceed the training patches).")
@click.option("--overlap", type=int, default=None,
              help="Overlap of neighbouring windows in pixels; their logits are blended. Default: window/4.")
@click.option("--batch-size", type=int, default=None,
              help="Windows per forward pass. Default: 4 on CUDA, 1 on the CPU (memory).")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--fp32", is_flag=True, help="On CUDA, predict in float32 instead of bf16 autocast.")
@click.option("--method", default=None, help="Method name stored in the submission's attributes.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict(checkpoint, data, track, out, window, overlap, batch_size, device, fp32, method, quiet):
    """Predict the whole target city into a submission file (predictions.h5).

    Sliding windows with blended overlaps, target-side attention on, argmax over classes
    1..13. Memory stays a few window-high bands, however large the city. Example:

    \b
        c2seg predict --checkpoint runs/ab/best.pt --data prep --track AB --out predictions.h5
    """
    # Imported here, not at the top: it needs torch (light install; see the module docstring).
    from .predict import predict_to_file

    _existing_dir(data, "prepared data folder")
    if batch_size is not None and batch_size < 1:
        raise C2SegError("--batch-size must be at least 1")
    result = predict_to_file(checkpoint, data, track, out, window=window,
                             overlap=window // 4 if overlap is None else overlap, batch_size=batch_size,
                             device=device, amp=not fp32, method=method, progress=not quiet)
    h, w = result["shape"]
    click.echo(f"wrote {out} ({h} x {w}, {result['seconds']:.1f} s, {result['pixels_per_second']:.0f} px/s)")
