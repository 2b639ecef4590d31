"""Training HighDAN on a prepared track: set-up, then one ADVENT iteration per step.

`train` sets up (the prepared data; the config and state the run starts from; the model and its
two optimisers, restored from last.pt on --resume) and then loops: a source batch and a target
batch, the poly learning rates for the step, one `train_step` (generator, then discriminators),
a log line; every `eval_every` steps and at the end, evaluation on the target city with the kit's
metrics (when its labels are known) and a checkpoint. Evaluation is `predict` with the run's
settings (predict.py), so the best mIoU is exactly what `predict` + `score` give for best.pt.
The rest has its own module:

- batches: the two endless batch streams (the recipe's sampling, augmentation and target windows),
  a pure function of (seed, step), so --resume is exact;
- pretrained: where the weights start (--init-backbone, --init-from);
- provenance: the track and input layout every checkpoint records, which predict checks;
- resume: a fresh run never overwrites another; a resumed one keeps its network and track;
- checkpoint: last.pt and best.pt (by target mIoU), holding everything (weights, optimisers, RNG);
- runlog: log.jsonl, the progress bar, and plain progress lines where no bar is drawn;
- devices: the device, bf16 autocast and channels_last on CUDA, the CPU thread count;
- distributed: data parallelism under torchrun (only rank 0 writes);
- interrupt: Ctrl-C acted on between two steps (:class:`TrainingInterrupted` says what was kept);
  a second Ctrl-C stops at once.

After the first step, a run that looks longer than ``warn_longer_than`` says so, with its estimate.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from c2seg_kit.errors import C2SegError
from c2seg_kit.outputs import write_text

from . import checkpoint as ckpt
from . import distributed as dist_utils
from .batches import source_and_target
from .config import HighDANConfig
from .devices import amp_active, channels_last_on, place_model, resolve_device, set_threads
from .distributed import DistInfo
from .interrupt import DeferredInterrupt
from .model import HighDAN
from .options import TrainOptions
from .predict import default_batch_size, evaluate_target, target_labels, tiling_for
from .pretrained import describe, init_backbone, init_from
from .provenance import input_layout
from .resume import BEST, CONFIG, LAST, starting_point
from .runlog import LOG, ProgressLines, RunLog, duration, progress_bar, show_step
from .step import make_optimizers, set_poly_lr, train_step
from .windows import open_prepared

__all__ = ["TrainOptions", "TrainingInterrupted", "train"]

EVAL_METRICS = ("miou", "oa", "f1", "kappa", "per_class_iou")  # what the log and checkpoints keep


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run: after a step, saved (``at_once`` False), or at once by a second Ctrl-C.
    ``kept`` is the run's last.pt when one holds a state of this run, at ``kept_step``. A
    KeyboardInterrupt, so that code catching Ctrl-C around `train` still does."""

    def __init__(self, *, step: int, total: int, kept: Path | None, kept_step: int | None, at_once: bool):
        self.step, self.total, self.kept, self.kept_step, self.at_once = step, total, kept, kept_step, at_once
        super().__init__(f"interrupted at step {step}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class _Run:
    """A run between two steps: how far it has got, and what rank 0 writes about it."""

    info: DistInfo
    cfg: HighDANConfig
    model: HighDAN
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    out: Path
    record: dict  # the "run" entry of every checkpoint
    log: RunLog | None  # None on ranks other than 0
    score: Callable[[HighDAN], dict] | None  # the model's target-city scores; None: no labels, or not rank 0
    step: int = 0
    saved_step: int | None = None  # the step last.pt holds (None: none written yet)
    metrics: dict = field(default_factory=dict)  # the last evaluation's
    best: dict = field(default_factory=dict)  # {step, miou} of the best evaluation

    def save(self, with_best: bool) -> None:
        if not self.info.is_main:
            return
        state = ckpt.make_state(self.model, self.cfg, step=self.step, opt_g=self.opt_g, opt_d=self.opt_d,
                                metrics=self.metrics, best=self.best, run=self.record)
        ckpt.save_checkpoint(self.out / LAST, state)
        self.saved_step = self.step
        if with_best:  # the same state: a copy of the file, not a second serialisation
            ckpt.copy_checkpoint(self.out / LAST, self.out / BEST)

    def evaluate(self) -> None:
        """Score the target city (when it can), keep best.pt when the mIoU improved, save last.pt."""
        improved = False
        if self.score is not None:
            scores = self.score(self.model)
            self.model.train()
            self.metrics = {k: scores[k] for k in EVAL_METRICS}
            self.log.evaluation(self.step, self.metrics)
            if not self.best or self.metrics["miou"] > self.best.get("miou", -1.0):
                self.best = {"step": self.step, "miou": self.metrics["miou"]}
                improved = True
        self.save(improved)
        dist_utils.barrier(self.info)


def train(opts: TrainOptions) -> dict:
    """Train (or resume) a run; returns a summary: step, total_steps, metrics (last evaluation),
    best ({step, miou}), out, and the trained model (on every rank)."""
    info = dist_utils.from_env()
    set_threads(opts.threads)
    device = resolve_device(opts.device, info.local_rank if info.enabled else None)
    dist_utils.init(info, device)
    try:
        return _train(opts, info, device)
    finally:
        dist_utils.shutdown(info)


def _train(opts: TrainOptions, info: DistInfo, device: torch.device) -> dict:
    out = Path(opts.out)
    with open_prepared(opts.data, opts.track) as data:
        # --- set-up: the data, where the run starts, the model and its optimisers ---------------
        track = data.track
        if not data.source.has_label:
            raise C2SegError(f"the source city {data.source.name} has no labels in {opts.data}")
        state, cfg = starting_point(opts, out, track.name)
        total = cfg.train.for_track(track.name, "steps")
        stop = total if opts.stop_after is None else min(total, opts.stop_after)
        eval_every = opts.eval_every or max(1, total // 5)
        amp, channels_last = amp_active(device, opts.amp is not False), channels_last_on(device)

        seed_everything(opts.seed)
        model = place_model(HighDAN(cfg), device).train()
        opt_g, opt_d = make_optimizers(model, cfg)
        init = None
        if state is not None:
            ckpt.restore_training(state, model, opt_g, opt_d)
            init = (state.get("run") or {}).get("init")
        elif opts.init_backbone is not None:  # before anything is written: a bad file trains nothing
            init = init_backbone(model, opts.init_backbone)
        elif opts.init_from is not None:
            init = init_from(model, opts.init_from)
        if init is not None and state is None and opts.notify is not None and info.is_main:
            opts.notify(describe(init))
        dist_utils.data_parallel(model, (opt_g, opt_d), info)
        step = 0 if state is None else int(state["step"])
        source, target = source_and_target(data, cfg.train, track.name, opts.seed, info, step, opts.workers,
                                           pin=device.type == "cuda")
        # Evaluation is `predict` of the target city with this run's settings (config.predict), the
        # same code and the same batch size rule: the best mIoU is what predict + score give best.pt.
        labels = target_labels(opts.labels, data.target, track) if info.is_main else None
        score = None if labels is None else functools.partial(
            evaluate_target, city=data.target, labels=labels, tiling=tiling_for(cfg, track.name),
            batch_size=default_batch_size(device), device=device, amp=amp, progress=False)
        record = {"track": track.name, "data": str(opts.data), "seed": opts.seed, "total_steps": total,
                  "world_size": info.world_size, "device": device.type, "amp": amp,
                  "threads": torch.get_num_threads(),  # CPU runs repeat exactly on one machine and thread count
                  "input": input_layout(data), "init": init}
        log = None
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            log = RunLog(out / LOG, keep_until=None if state is None else step)
            # config.json: the run's config, and under "run" what it was trained on (ignored as a config).
            write_text(out / CONFIG, json.dumps({**cfg.to_dict(), "run": record}, indent=2))
        run = _Run(info, cfg, model, opt_g, opt_d, out, record, log, score, step,
                   saved_step=None if state is None else step)
        if state is not None:
            run.metrics, run.best = dict(state.get("metrics") or {}), dict(state.get("best") or {})

        # --- the loop: one ADVENT iteration per step ------------------------------------------
        main = info.is_main
        bar = progress_bar(total=stop, initial=run.step, track=track.name, enabled=opts.progress and main)
        say = opts.notify if main and opts.notify is not None else (lambda line: None)
        lines = ProgressLines(total=stop, initial=run.step, track=track.name, write=say,
                              every=0 if opts.progress else opts.progress_every)
        first_step = run.step + 1

        def on_ctrl_c() -> None:  # in the signal handler: no bar calls (their lock may be held)
            say(("\n" if not bar.disable else "") + f"Ctrl-C: the step under way finishes, then {out / LAST} is "
                "saved; Ctrl-C again stops at once")

        def stop_here() -> None:
            # Between two steps the state is consistent: keep it, --resume picks up here.
            run.save(with_best=False)
            raise TrainingInterrupted(step=run.step, total=stop, kept=out / LAST, kept_step=run.step, at_once=False)

        interrupt = DeferredInterrupt(on_first=on_ctrl_c)
        try:
            with interrupt:
                while run.step < stop:
                    if interrupt.requested:
                        stop_here()
                    src, tgt = next(source), next(target)
                    lr_g, lr_d = set_poly_lr(opt_g, opt_d, run.step, total, cfg)
                    started = time.perf_counter()
                    losses = train_step(model, opt_g, opt_d, src, tgt, cfg, amp=amp, channels_last=channels_last)
                    dist_utils.broadcast_module(model, info, buffers_only=True)  # BN statistics, as DDP does
                    run.step += 1
                    seconds = time.perf_counter() - started
                    if log is not None:
                        log.step(run.step, lr_g, lr_d, losses, seconds)
                    show_step(bar, losses, run.best)
                    lines.update(run.step, losses, run.best)
                    if run.step == first_step and seconds * (stop - run.step) > opts.warn_longer_than:
                        say(f"warning: step {run.step} took {duration(seconds)}: the {stop - run.step} steps left "
                            f"would take about {duration(seconds * (stop - run.step))} on {device.type} "
                            "(an estimate from this step; --steps or --stop-after shorten the run, and "
                            "Ctrl-C keeps last.pt for --resume)")
                    if interrupt.requested:
                        stop_here()
                    if run.step % eval_every == 0 and run.step < stop:
                        run.evaluate()
                run.evaluate()
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: at once, mid-step; last.pt is the last save
            kept = out / LAST if run.saved_step is not None else None
            raise TrainingInterrupted(step=run.step, total=stop, kept=kept, kept_step=run.saved_step,
                                      at_once=True) from None
        finally:
            bar.close()
            if log is not None:
                log.close()
    return {"step": run.step, "total_steps": total, "metrics": run.metrics, "best": run.best, "out": str(out),
            "model": model}
