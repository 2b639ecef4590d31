"""What a run reports: log.jsonl in the run folder, the progress bar, and without a bar plain lines.

log.jsonl holds one line per step, ``{"step", "lr", "lr_d", <each loss>..., "sec"}``, and one per
evaluation, ``{"step", "eval": {"miou", "oa", "f1", "kappa", "per_class_iou"}}``.

The bar is drawn on a terminal only; a run piped into a log or another program would otherwise say
nothing for hours, so without a bar :class:`ProgressLines` writes a plain line (step, losses, rate,
time left) at a steady interval.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from c2seg_kit.outputs import open_log, write_text

LOG = "log.jsonl"


class RunLog:
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
            write_text(path, "".join(k + "\n" for k in kept))
        self.file = open_log(path, append=keep_until is not None)

    def step(self, step: int, lr_g: float, lr_d: float, losses: dict[str, float], seconds: float) -> None:
        self._write({"step": step, "lr": lr_g, "lr_d": lr_d, **losses, "sec": round(seconds, 4)})

    def evaluation(self, step: int, metrics: dict) -> None:
        self._write({"step": step, "eval": metrics})

    def _write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.file.close()


def progress_bar(*, total: int, initial: int, track: str, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=f"train {track}", unit="step", disable=not enabled,
                dynamic_ncols=True)


def shown_losses(losses: dict[str, float], best: dict) -> dict[str, str]:
    """What a step shows: the first three losses and the best target mIoU so far."""
    shown = {k: f"{v:.3f}" for k, v in list(losses.items())[:3]}
    if best:
        shown["best_miou"] = f"{best['miou']:.3f}"
    return shown


def show_step(bar: tqdm, losses: dict[str, float], best: dict) -> None:
    """Advance the bar by a step; beside it, :func:`shown_losses`."""
    bar.update(1)
    bar.set_postfix(shown_losses(losses, best), refresh=False)


def duration(seconds: float) -> str:
    """A span of time to read: "42 s", "12 min 5 s", "7 h 30 min"."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def rate(seconds_per_step: float) -> str:
    """Steps per second when above one, else seconds per step."""
    if seconds_per_step <= 0:
        return "- step/s"
    if seconds_per_step < 1:
        return f"{1 / seconds_per_step:.1f} step/s"
    return f"{duration(seconds_per_step)}/step" if seconds_per_step >= 60 else f"{seconds_per_step:.1f} s/step"


class ProgressLines:
    """One plain line per `every` seconds (and after the first step): the step, the losses, the rate
    and the time left, measured over this run's steps so far. ``every`` 0 writes nothing."""

    def __init__(self, *, total: int, initial: int, track: str, every: float, write: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.track, self.every, self.write, self.clock = total, track, every, write, clock
        self.first_step, self.started = initial, clock()
        self.last: float | None = None  # when the last line was written

    def update(self, step: int, losses: dict[str, float], best: dict) -> None:
        if self.every <= 0:
            return
        now = self.clock()
        if self.last is not None and now - self.last < self.every:
            return
        self.last = now
        per_step = (now - self.started) / max(1, step - self.first_step)
        shown = ", ".join(f"{k} {v}" for k, v in shown_losses(losses, best).items())
        self.write(f"train {self.track}: step {step}/{self.total}, {shown}, {rate(per_step)}, "
                   f"{duration(per_step * (self.total - step))} left")
