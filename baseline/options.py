"""What a training run is asked to do: the options of `c2seg train-baseline`, as data."""

from __future__ import annotations

from collections.abc import Callable
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
    # How evaluation (and later `predict` of this run) tiles the target: None = the config's predict section.
    stitch: str | None = None  # blend | authors
    eval_window: int | None = None
    eval_overlap: int | None = None
    augment: str | None = None  # once | per-epoch; None = the config's
    init_backbone: Path | None = None  # ImageNet HRNetV2-W48 weights (HRNet release or timm layout)
    init_from: Path | None = None  # a checkpoint whose generator starts this run (BW from an AB run)
    amp: bool | None = None  # None = bf16 autocast on CUDA only; False = float32 (the CPU is always float32)
    progress: bool = True  # the progress bar
    progress_every: float = 30.0  # without the bar, a plain progress line every so many seconds; 0: none
    threads: int | None = None  # torch CPU threads; None = devices.set_threads's rule
    warn_longer_than: float = 3600.0  # warn after the first step when the run looks longer (seconds)
    notify: Callable[[str], None] | None = None  # one-line messages for the user (the CLI: stderr)
