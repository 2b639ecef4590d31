"""Training HighDAN on a prepared track: the loop around one adversarial step.

What this module adds to `c2seg_baseline.step.train_step`:
- two endless batch streams (labelled source windows, unlabelled target windows) whose
  order and augmentation are a pure function of (seed, step), so a resumed run sees exactly
  the batches the uninterrupted run would have seen;
- the poly learning-rate schedule, set from the step number before every step;
- evaluation on the target city with the kit's metrics when its labels are known, keeping
  best.pt (by target mIoU) and last.pt;
- checkpoints that restore everything (weights, optimisers, RNG, step), a JSONL log, a
  progress bar, bf16 autocast and channels_last on CUDA, and data parallelism under torchrun.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from c2seg_baseline import checkpoint as ckpt
from c2seg_baseline import distributed as dist_utils
from c2seg_baseline.predict import evaluate_city, resolve_device
from c2seg_kit.errors import C2SegError
from c2seg_kit.registry import get_track

LAST, BEST, LOG = "last.pt", "best.pt", "log.jsonl"


@dataclass
class TrainOptions:
    data: Path
    track: str
    out: Path
    config: str | None = None  # preset name or JSON file; None = "paper" (or the checkpoint's on resume)
    steps: int | None = None  # length of the schedule; None = the config's steps for the track
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    eval_every: int | None = None  # None = five evaluations over the run
    source_only: bool = False
    no_dice: bool = False
    batch_size: int | None = None  # per process; None = the config's
    workers: int = 0
    labels: Path | None = None  # target labels.h5 when the prepared target city has none
    stop_after: int | None = None  # stop at this step (schedule unchanged); resume later
    eval_window: int = 256
    eval_overlap: int = 64
    amp: bool | None = None  # None = bf16 autocast on CUDA only
    progress: bool = True


# --- data ---------------------------------------------------------------------------------------

class _EpochItems(Dataset):
    """Items addressed by (epoch, index), so augmentation follows the sampler even in
    persistent DataLoader workers (which never see set_epoch calls made in the parent)."""

    def __init__(self, windows):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, key):
        epoch, index = key
        self.windows.set_epoch(epoch)
        return self.windows[index]


class StepBatches(Sampler):
    """Endless batches of (epoch, index), a pure function of (seed, step, rank).

    Each epoch is a seeded permutation of all windows, wrapped round to a whole number of
    global batches; global batch j of an epoch is split among ranks, rank r taking the r-th
    slice (the DistributedSampler arrangement). Starting at `start_step` skips exactly the
    batches already consumed, without reading them.
    """

    def __init__(self, n: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1,
                 start_step: int = 0):
        if n < 1:
            raise C2SegError("no training windows: the city is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = max(1, math.ceil(n / self.global_batch))

    def epoch_order(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        need = self.steps_per_epoch * self.global_batch
        return np.resize(perm, need)  # repeats the permutation to fill the last batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            epoch, first = divmod(step, self.steps_per_epoch)
            order = self.epoch_order(epoch)
            for j in range(first, self.steps_per_epoch):
                lo = (j * self.world_size + self.rank) * self.batch_size
                yield [(epoch, int(i)) for i in order[lo:lo + self.batch_size]]
            step = (epoch + 1) * self.steps_per_epoch

    def __len__(self) -> int:  # endless; DataLoader only needs this for len(loader)
        return 2**62


def batch_stream(windows, batch_size: int, seed: int, info, start_step: int, workers: int,
                 pin: bool) -> Iterator[dict]:
    sampler = StepBatches(len(windows), batch_size, seed, rank=info.rank, world_size=info.world_size,
                          start_step=start_step)
    loader = DataLoader(_EpochItems(windows), batch_sampler=sampler, num_workers=workers,
                        pin_memory=pin, persistent_workers=workers > 0,
                        prefetch_factor=2 if workers > 0 else None)
    return iter(loader)


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        if k == "origin":
            continue
        v = v.to(device, non_blocking=True)
        if channels_last and v.dim() == 4:
            v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


# --- set-up ---------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def effective_config(opts: TrainOptions, base: Any, track: str):
    """The config with the command line's overrides (ablations, batch size, steps) applied."""
    from c2seg_baseline.config import get_config

    cfg = base if base is not None else get_config(opts.config or "paper")
    loss = cfg.loss
    if opts.source_only:
        loss = dataclasses.replace(loss, adversarial=False)
    if opts.no_dice:
        loss = dataclasses.replace(loss, dice=False)
    train = cfg.train
    if opts.batch_size is not None:
        if opts.batch_size < 1:
            raise C2SegError("--batch-size must be at least 1")
        train = dataclasses.replace(train, batch_size=opts.batch_size)
    if opts.steps is not None:
        if opts.steps < 1:
            raise C2SegError("--steps must be at least 1")
        train = dataclasses.replace(train, steps={**train.steps, track: opts.steps})
    return dataclasses.replace(cfg, loss=loss, train=train)


class JsonlLog:
    """Append-only JSONL log; on resume, lines from steps after the checkpoint are dropped
    (they belong to the part of the run the checkpoint does not hold)."""

    def __init__(self, path: Path, *, keep_until: int | None):
        self.path = path
        if keep_until is not None and path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= keep_until:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue
            path.write_text("".join(k + "\n" for k in kept))
        self.file = path.open("a" if keep_until is not None else "w", buffering=1)

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.file.close()


def _target_labels(opts: TrainOptions, target, track) -> Callable[[int, int], np.ndarray] | None:
    """labels(r0, r1) -> uint8 rows of the target city, or None when no labels are known."""
    if opts.labels is not None:
        from c2seg_kit.submission import open_labels

        with open_labels(opts.labels) as lab:
            if getattr(lab, "track", track.name) != track.name:
                raise C2SegError(f"{opts.labels} holds {lab.track} labels, not {track.name}")
            full = lab.read()
        if tuple(full.shape) != tuple(target.shape):
            raise C2SegError(f"{opts.labels}: label shape {full.shape} != target city shape {target.shape}")
        return lambda r0, r1: full[r0:r1]
    if target.has_label:
        width = target.shape[1]
        return lambda r0, r1: target.read_label(r0, r1, 0, width)
    return None


# --- the loop -------------------------------------------------------------------------------------

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


def _train(opts: TrainOptions, info, device: torch.device) -> dict:
    from c2seg_baseline.model import HighDAN
    from c2seg_baseline.step import make_optimizers, poly_lr, train_step
    from c2seg_kit.dataset import WindowDataset
    from c2seg_kit.prepared import PreparedData

    try:
        track = get_track(opts.track)
    except ValueError as e:
        raise C2SegError(str(e)) from None
    out = Path(opts.out)
    data = PreparedData(opts.data)
    if data.track.name != track.name:
        raise C2SegError(f"{opts.data} is prepared for track {data.track.name}, not {track.name}")
    if not data.source.has_label:
        raise C2SegError(f"the source city {data.source.name} has no labels in {opts.data}")

    # A fresh run never overwrites another run's checkpoints.
    state = None
    if opts.resume:
        if not (out / LAST).is_file():
            raise C2SegError(f"nothing to resume: no {LAST} in {out}")
        state = ckpt.read_checkpoint(out / LAST)
        saved_cfg = ckpt.config_from_dict(state["config"])
        if opts.config is not None:
            from c2seg_baseline.config import get_config

            if get_config(opts.config).model != saved_cfg.model:
                raise C2SegError(f"--config {opts.config} describes another network than {out / LAST}; "
                                 "resume without --config")
        if state.get("run", {}).get("track") not in (None, track.name):
            raise C2SegError(f"{out / LAST} is a track {state['run']['track']} run, not {track.name}")
        cfg = effective_config(opts, saved_cfg, track.name)
    else:
        if (out / LAST).exists():
            raise C2SegError(f"{out} already holds a run ({LAST}); pass --resume to continue it or choose another --out")
        cfg = effective_config(opts, None, track.name)
    if hasattr(cfg, "validate"):
        cfg.validate()
    total = int(cfg.train.steps[track.name])
    stop = total if opts.stop_after is None else min(total, opts.stop_after)
    eval_every = opts.eval_every if opts.eval_every else max(1, total // 5)
    amp = (device.type == "cuda") if opts.amp is None else (opts.amp and device.type == "cuda")
    channels_last = device.type == "cuda"

    seed_everything(opts.seed)
    model = HighDAN(cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.to(device).train()
    opt_g, opt_d = make_optimizers(model, cfg)
    step = 0
    best = {}
    if state is not None:
        for part in ckpt.PARTS:
            getattr(model, part).load_state_dict(state[part])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step = int(state["step"])
        best = dict(state.get("best") or {})
        ckpt.set_rng_state(state["rng"])
    dist_utils.broadcast_module(model, info)  # identical start on every rank
    dist_utils.average_gradients_before_step(opt_g, info)
    dist_utils.average_gradients_before_step(opt_d, info)

    t = cfg.train
    pin = device.type == "cuda"
    source_windows = WindowDataset(data, "source", window=t.window, stride=t.stride, augment=True, seed=opts.seed)
    target_windows = WindowDataset(data, "target", window=t.window, stride=t.stride, augment=True,
                                   seed=opts.seed + 1)
    # Distinct seeds: the two streams must not walk in lockstep.
    source = batch_stream(source_windows, t.batch_size, opts.seed, info, step, opts.workers, pin)
    target = batch_stream(target_windows, t.batch_size, opts.seed + 10_007, info, step, opts.workers, pin)
    labels = _target_labels(opts, data.target, track) if info.is_main else None

    run_info = {"track": track.name, "data": str(opts.data), "seed": opts.seed, "total_steps": total,
                "world_size": info.world_size, "device": device.type, "amp": amp}
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = JsonlLog(out / LOG, keep_until=step if state is not None else None) if info.is_main else None
    if info.is_main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    metrics: dict = dict(state.get("metrics") or {}) if state is not None else {}

    def save(with_best: bool) -> None:
        if not info.is_main:
            return
        s = ckpt.make_state(model, cfg, step=step, opt_g=opt_g, opt_d=opt_d, metrics=metrics, best=best,
                            run=run_info)
        ckpt.save_checkpoint(out / LAST, s)
        if with_best:
            ckpt.save_checkpoint(out / BEST, s)

    def evaluate() -> None:
        nonlocal metrics, best
        improved = False
        if info.is_main and labels is not None:
            scores = evaluate_city(model, data.target, labels, window=opts.eval_window,
                                   overlap=opts.eval_overlap, batch_size=t.batch_size, device=device, amp=amp,
                                   progress=False)
            model.train()
            metrics = {k: scores[k] for k in ("miou", "oa", "f1", "kappa", "per_class_iou")}
            log.write({"step": step, "eval": metrics})
            if not best or metrics["miou"] > best.get("miou", -1.0):
                best = {"step": step, "miou": metrics["miou"]}
                improved = True
        save(improved)
        dist_utils.barrier(info)

    bar = tqdm(total=stop, initial=step, desc=f"train {track.name}", unit="step",
               disable=not (opts.progress and info.is_main), dynamic_ncols=True)
    interrupt = _DeferredInterrupt()
    try:
        with interrupt:
            while step < stop:
                src = _to_device(next(source), device, channels_last)
                tgt = _to_device(next(target), device, channels_last)
                lr_g = poly_lr(t.lr, step, total, t.poly_power)
                lr_d = poly_lr(t.lr_d, step, total, t.poly_power)
                for opt, lr in ((opt_g, lr_g), (opt_d, lr_d)):
                    for group in opt.param_groups:
                        group["lr"] = lr
                started = time.perf_counter()
                losses = train_step(model, opt_g, opt_d, src, tgt, cfg, amp=amp, channels_last=channels_last)
                dist_utils.broadcast_module(model, info, buffers_only=True)
                step += 1
                losses = {k: float(v) for k, v in losses.items()}
                if log is not None:
                    log.write({"step": step, "lr": lr_g, "lr_d": lr_d, **losses,
                               "sec": round(time.perf_counter() - started, 4)})
                bar.update(1)
                shown = {k: f"{v:.3f}" for k, v in list(losses.items())[:3]}
                if best:
                    shown["best_miou"] = f"{best['miou']:.3f}"
                bar.set_postfix(shown, refresh=False)
                if interrupt.requested:
                    # Between two steps the state is consistent: keep it, --resume picks up here.
                    save(False)
                    raise KeyboardInterrupt
                if step % eval_every == 0 and step < stop:
                    evaluate()
            evaluate()
    finally:
        bar.close()
        if log is not None:
            log.close()
        data.close()
    return {"step": step, "total_steps": total, "metrics": metrics, "best": best, "out": str(out), "model": model}


class _DeferredInterrupt:
    """Ctrl-C during a step is acted on after the step (so the saved state is consistent);
    a second Ctrl-C interrupts at once. Only in the main thread, where signals are handled."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
