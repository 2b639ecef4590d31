"""What a training run is asked to do: the options of `c2seg train-baseline`, as data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    amp: bool | None = None  # None = bf16 autocast on CUDA only; False = float32 (the CPU is always float32)
    progress: bool = True
