"""`c2seg train-baseline` and `c2seg predict`: the HighDAN baseline from the command line
(registered with the core CLI through the ``c2seg.commands`` entry points in pyproject.toml).

The modules that import torch are imported inside the commands: `c2seg --help` loads this module
for the verbs' one-line help, and on the light install a missing 'baseline' extra must surface
as the core CLI's one-line message, not at import.
"""

from __future__ import annotations

from pathlib import Path

import click

from c2seg_kit.cli.options import progress_option, track_option
from c2seg_kit.errors import C2SegError
from c2seg_kit.outputs import claim_file

from .config import AUGMENT, STITCH  # plain data (config.py imports no torch)

DEVICE_HELP = "auto = CUDA when available, else CPU."

threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    show_default="OMP_NUM_THREADS when set, else one less than the CPUs this process may use (at least 1)",
    help="torch CPU threads (on 2 CPUs busy with other work, two threads trained 10x slower than one).")


def prepared_option(help: str):
    """The prepared cache, named as `c2seg prepare --out PREPARED_DIR` names it (--data: the old spelling)."""
    return click.option("--prepared", "--data", "data", required=True, type=click.Path(path_type=Path),
                        metavar="PREPARED_DIR", help=f"{help} (--data: the same, the older spelling).")


def _existing_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise C2SegError(f"{what} {path} does not exist or is not a folder")
    return path


@click.command("train-baseline")
@prepared_option("Prepared cache (the output of `c2seg prepare`)")
@track_option()
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Run folder: last.pt, log.jsonl, config.json; best.pt when the target labels are known.")
@click.option("--config", default=None, show_default="paper; on --resume the run's own",
              help="paper, tiny, or a JSON file overriding a preset.")
@click.option("--steps", type=int, default=None, show_default="the config's: AB 6000, BW 10000",
              help="Length of the schedule (poly decay ends here).")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Runs on the CPU repeat exactly under a seed.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt, exactly.")
@click.option("--eval-every", type=int, default=None, show_default="5 times per run",
              help="Evaluate on the target city every N steps (when its labels are known).")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Target labels.h5, when the prepared target city has no label.")
@click.option("--source-only", is_flag=True, help="Ablation: no adversarial terms, no target-side attention.")
@click.option("--no-dice", is_flag=True, help="Ablation: cross-entropy only.")
@click.option("--batch-size", type=int, default=None, show_default="the config's: paper 4",
              help="Windows per step per process.")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--stop-after", type=int, default=None,
              help="Stop at this step without shortening the schedule; continue later with --resume.")
@click.option("--init-backbone", type=click.Path(path_type=Path), default=None,
              help="ImageNet HRNetV2-W48 weights (the HRNet classification release or timm's hrnet_w48, a local "
                   "file) into every modality's stage 1 and the shared stages 2-4, as the authors start AB.")
@click.option("--init-from", type=click.Path(path_type=Path), default=None,
              help="Start the generator from another run's checkpoint (or the authors' best_model.pth), "
                   "as the authors start BW from their AB run.")
@click.option("--augment", type=click.Choice(AUGMENT), default=None, show_default="the config's: paper once",
              help="Rotations/flips drawn once per window (the authors') or anew every epoch.")
@click.option("--stitch", type=click.Choice(STITCH), default=None, show_default="the config's: paper blend",
              help="How evaluation tiles the target, and so how `predict` tiles it for this run unless told "
                   "otherwise: blended overlapping windows or the authors' tiling.")
@click.option("--fp32", is_flag=True, help="On CUDA, train in float32 instead of bf16 autocast.")
@threads_option
@progress_option
@click.option("--progress-every", type=click.FloatRange(min=0), default=30.0, show_default=True,
              metavar="SECONDS", help="Where no bar is drawn (a log, a pipe, --no-progress): a plain line "
              "(step, losses, rate, time left) after the first step and then every SECONDS; 0: none.")
def train_baseline(data, track, out, config, steps, device, seed, resume, eval_every, labels, source_only,
                   no_dice, batch_size, workers, stop_after, init_backbone, init_from, augment, stitch, fp32,
                   threads, progress, progress_every):
    """Train HighDAN on a prepared track (adversarial adaptation from source to target city).

    Writes checkpoints (last.pt; best.pt by target mIoU when target labels are known) and a
    per-step log (log.jsonl) into --out. Under torchrun, trains data-parallel (only rank 0
    writes). Example:

    \b
        c2seg train-baseline --prepared prep --track AB --out runs/ab --config tiny --steps 300
    """
    # Imported here, not at the top: it needs torch (light install; see the module docstring).
    from .train import TrainingInterrupted, TrainOptions, train

    _existing_dir(data, "prepared data folder")
    if labels is not None and not labels.is_file():
        raise C2SegError(f"labels file {labels} not found")
    if workers < 0:
        raise C2SegError("--workers must be 0 or more")
    if eval_every is not None and eval_every < 1:
        raise C2SegError("--eval-every must be at least 1")
    if stop_after is not None and stop_after < 1:
        raise C2SegError("--stop-after must be at least 1")
    try:
        summary = train(TrainOptions(
            data=data, track=track, out=out, config=config, steps=steps, device=device, seed=seed,
            resume=resume, eval_every=eval_every, source_only=source_only, no_dice=no_dice,
            batch_size=batch_size, workers=workers, labels=labels, stop_after=stop_after,
            init_backbone=init_backbone, init_from=init_from, augment=augment, stitch=stitch,
            amp=False if fp32 else None, progress=progress, progress_every=progress_every, threads=threads,
            notify=lambda line: click.echo(line, err=True),
        ))
    except TrainingInterrupted as stopped:
        # The command that continues this run: what --resume does not read from last.pt.
        extra = [*(["--seed", seed] if seed else []), *(["--labels", labels] if labels is not None else []),
                 *(["--eval-every", eval_every] if eval_every is not None else []),
                 *(["--device", device] if device != "auto" else []), *(["--workers", workers] if workers else []),
                 *(["--threads", threads] if threads is not None else []), *(["--fp32"] if fp32 else [])]
        for line in interrupted_lines(stopped, data, track, out, extra):
            click.echo(line, err=True)
        raise SystemExit(130) from None  # the shell's code for a Ctrl-C
    line = f"step {summary['step']}/{summary['total_steps']} -> {summary['out']}"
    if summary["metrics"]:
        line += f"; target mIoU {summary['metrics']['miou']:.4f}"
    if summary["best"]:
        line += f" (best {summary['best']['miou']:.4f} at step {summary['best']['step']})"
    click.echo(line)
    click.echo(checkpoint_to_use(Path(summary["out"]), summary["best"], data, track))


def checkpoint_to_use(run: Path, best: dict, data: Path, track: str) -> str:
    """Which checkpoint of a finished run to predict with, as the command to type: best.pt when the
    run could score the target city, else last.pt (no target labels: no best.pt is written)."""
    from c2seg_kit.cli.demo import shell_line

    if best:
        name, why = "best.pt", f"the best target mIoU, step {best['step']}"
    else:
        name, why = "last.pt", "no target labels, so no best.pt: the last step's weights"
    command = shell_line(["predict", "--checkpoint", run / name, "--prepared", data, "--track", track,
                          "--out", "predictions.h5"])
    return f"checkpoint to predict with: {run / name} ({why}):\n  {command}"


def interrupted_lines(stopped, data: Path, track: str, out: Path, extra: list) -> list[str]:
    """What a Ctrl-C kept, and the exact command that goes on from it."""
    from c2seg_kit.cli.demo import shell_line

    how = "stopped at once by a second Ctrl-C" if stopped.at_once else "interrupted"
    lines = [f"{how} after step {stopped.step} of {stopped.total}"]
    if stopped.kept is None:
        lines.append("nothing was kept: no checkpoint was written yet; start again with the same command")
        return lines
    lines.append(f"kept {stopped.kept} (step {stopped.kept_step}); continue with:")
    lines.append("  " + shell_line(["train-baseline", "--prepared", data, "--track", track, "--out", out,
                                    "--resume", *extra]))
    return lines


@click.command("predict")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="A checkpoint written by train-baseline (last.pt / best.pt).")
@prepared_option("Prepared cache (the output of `c2seg prepare`)")
@track_option(help="The track whose target city is predicted.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Submission file to write (a new file unless --force).")
@click.option("--stitch", type=click.Choice(STITCH), default=None,
              show_default="the checkpoint's, what its training evaluated with",
              help="blend: overlapping windows, logits blended; authors: windows of the training size, no "
                   "overlap, the last one snapped to the edge, the earlier window's labels kept where they overlap.")
@click.option("--window", type=int, default=None,
              show_default="the checkpoint's; else 512 for blend, the training window for authors",
              help="Window size in pixels (a multiple of 32; may exceed the training patches).")
@click.option("--overlap", type=int, default=None, show_default="the checkpoint's, else window/4",
              help="Blend only: overlap of neighbouring windows in pixels.")
@click.option("--batch-size", type=int, default=None, show_default="4 on CUDA, 1 on the CPU (memory)",
              help="Windows per forward pass.")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--fp32", is_flag=True, help="On CUDA, predict in float32 instead of bf16 autocast.")
@click.option("--method", default=None, help="Method name stored in the submission's attributes.")
@click.option("--force", is_flag=True, help="Replace --out if it exists (never the checkpoint or the prepared cache).")
@threads_option
@progress_option
def predict(checkpoint, data, track, out, stitch, window, overlap, batch_size, device, fp32, method, force, threads,
            progress):
    """Predict the whole target city into a submission file (predictions.h5).

    Sliding windows (blended overlaps, or the authors' tiling with --stitch authors), target-side
    attention on, argmax over classes 1..13. Memory stays a few window-high bands, however large
    the city. The checkpoint must match --track and the prepared cache (bands, PCA, normalisation).
    --checkpoint also takes the authors' best_model.pth, with their best_DA_1.pth beside it. Example:

    \b
        c2seg predict --checkpoint runs/ab/last.pt --prepared prep --track AB --out predictions.h5
    """
    # Imported here, not at the top: it needs torch (light install; see the module docstring).
    from .predict import predict_to_file

    claim_file(out, force=force, inputs=(checkpoint, data))
    _existing_dir(data, "prepared data folder")
    result = predict_to_file(checkpoint, data, track, out, stitch=stitch, window=window, overlap=overlap,
                             batch_size=batch_size, device=device, amp=not fp32, method=method, progress=progress,
                             threads=threads)
    t = result["tiling"]
    how = f"{t['stitch']} {t['window']} px" + (f", overlap {t['overlap']}" if t["stitch"] == "blend" else "")
    size = f"{result['tiles']} tiles" if result.get("tiles") else "{} x {}".format(*result["shape"])
    click.echo(f"wrote {out} ({size}, {how}, {result['seconds']:.1f} s, {result['pixels_per_second']:.0f} px/s)")


@click.command("import-weights")
@click.argument("authors", type=click.Path(path_type=Path), metavar="AUTHORS_FILES")
@prepared_option("The prepared cache the weights will predict (its track and input layout are recorded)")
@track_option()
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to write (a new file unless --force).")
@click.option("--force", is_flag=True, help="Replace --out if it exists (never one of the authors' files).")
def import_weights(authors, data, track, out, force):
    """Turn the authors' three state_dict files into a checkpoint that `predict` checks.

    AUTHORS_FILES is the folder holding best_model.pth, best_DA_1.pth and best_DA_2.pth (or the
    generator file, its DA_1/DA_2 files beside it). The checkpoint records the track and the
    prepared cache's input layout, so `predict` refuses another track or input; it predicts with
    the authors' tiling (--stitch authors) unless told otherwise. Example:

    \b
        c2seg prepare data/ab --track AB --out prepared/ab
        c2seg import-weights authors/ --prepared prepared/ab --track AB --out authors.pt
        c2seg predict --checkpoint authors.pt --prepared prepared/ab --track AB --out predictions.h5
    """
    # Imported here, not at the top: it needs torch (light install; see the module docstring).
    from .import_weights import import_authors_weights

    _existing_dir(data, "prepared data folder")
    result = import_authors_weights(authors, track, data, out, overwrite=force)
    for difference in result["differences"]:
        click.echo(f"warning: {data} was prepared with {difference}: the authors' weights expect their "
                   "preprocessing", err=True)
    bands = ", ".join(f"{m} {c}" for m, c in result["channels"].items())
    click.echo(f"wrote {out} (the authors' weights; track {result['track']}, bands {bands}; "
               "predicts with --stitch authors)")
