"""What a run reports: log.jsonl in the run folder, and the progress bar.

log.jsonl holds one line per step, ``{"step", "lr", "lr_d", <each loss>..., "sec"}``, and one per
evaluation, ``{"step", "eval": {"miou", "oa", "f1", "kappa", "per_class_iou"}}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

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
            path.write_text("".join(k + "\n" for k in kept))
        self.file = path.open("a" if keep_until is not None else "w", buffering=1)

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


def show_step(bar: tqdm, losses: dict[str, float], best: dict) -> None:
    """Advance the bar by a step; beside it, the first three losses and the best target mIoU so far."""
    bar.update(1)
    shown = {k: f"{v:.3f}" for k, v in list(losses.items())[:3]}
    if best:
        shown["best_miou"] = f"{best['miou']:.3f}"
    bar.set_postfix(shown, refresh=False)
