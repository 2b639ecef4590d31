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
- runlog: log.jsonl and the progress bar;
- devices: the device, bf16 autocast and channels_last on CUDA;
- distributed: data parallelism under torchrun (only rank 0 writes);
- interrupt: Ctrl-C acted on between two steps.
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

from . import checkpoint as ckpt
from . import distributed as dist_utils
from .batches import source_and_target
from .config import HighDANConfig
from .dataset import open_prepared
from .devices import amp_active, channels_last_on, place_model, resolve_device
from .distributed import DistInfo
from .interrupt import DeferredInterrupt
from .model import HighDAN
from .options import TrainOptions
from .predict import default_batch_size, evaluate_target, target_labels, tiling_for
from .pretrained import describe, init_backbone, init_from
from .provenance import input_layout
from .resume import BEST, LAST, starting_point
from .runlog import LOG, RunLog, progress_bar, show_step
from .step import make_optimizers, set_poly_lr, train_step

__all__ = ["TrainOptions", "train"]

EVAL_METRICS = ("miou", "oa", "f1", "kappa", "per_class_iou")  # what the log and checkpoints keep


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
    metrics: dict = field(default_factory=dict)  # the last evaluation's
    best: dict = field(default_factory=dict)  # {step, miou} of the best evaluation

    def save(self, with_best: bool) -> None:
        if not self.info.is_main:
            return
        state = ckpt.make_state(self.model, self.cfg, step=self.step, opt_g=self.opt_g, opt_d=self.opt_d,
                                metrics=self.metrics, best=self.best, run=self.record)
        ckpt.save_checkpoint(self.out / LAST, state)
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
                  "input": input_layout(data), "init": init}
        log = None
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            log = RunLog(out / LOG, keep_until=None if state is None else step)
            # config.json: the run's config, and under "run" what it was trained on (ignored as a config).
            (out / "config.json").write_text(json.dumps({**cfg.to_dict(), "run": record}, indent=2))
        run = _Run(info, cfg, model, opt_g, opt_d, out, record, log, score, step)
        if state is not None:
            run.metrics, run.best = dict(state.get("metrics") or {}), dict(state.get("best") or {})

        # --- the loop: one ADVENT iteration per step ------------------------------------------
        bar = progress_bar(total=stop, initial=run.step, track=track.name, enabled=opts.progress and info.is_main)
        interrupt = DeferredInterrupt()
        try:
            with interrupt:
                while run.step < stop:
                    src, tgt = next(source), next(target)
                    lr_g, lr_d = set_poly_lr(opt_g, opt_d, run.step, total, cfg)
                    started = time.perf_counter()
                    losses = train_step(model, opt_g, opt_d, src, tgt, cfg, amp=amp, channels_last=channels_last)
                    dist_utils.broadcast_module(model, info, buffers_only=True)  # BN statistics, as DDP does
                    run.step += 1
                    if log is not None:
                        log.step(run.step, lr_g, lr_d, losses, time.perf_counter() - started)
                    show_step(bar, losses, run.best)
                    if interrupt.requested:
                        # Between two steps the state is consistent: keep it, --resume picks up here.
                        run.save(with_best=False)
                        raise KeyboardInterrupt
                    if run.step % eval_every == 0 and run.step < stop:
                        run.evaluate()
                run.evaluate()
        finally:
            bar.close()
            if log is not None:
                log.close()
    return {"step": run.step, "total_steps": total, "metrics": run.metrics, "best": run.best, "out": str(out),
            "model": model}
