"""Where a run starts: a fresh run folder, or the last checkpoint of the run in it.

A fresh run never writes over another run's checkpoints; a resumed run keeps its own network
(a --config naming another network is refused) and its own track. Either way the command
line's overrides (ablations, batch size, schedule length) apply to the config it runs under.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from c2seg_kit.errors import C2SegError
from c2seg_kit.outputs import claim_folder

from . import checkpoint as ckpt
from .config import HighDANConfig, get_config
from .options import TrainOptions

LAST, BEST = "last.pt", "best.pt"  # in the run folder: the latest state, the best by target mIoU
CONFIG = "config.json"  # in the run folder: the run's config, with what it was trained on under "run"


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is the config.json a run of `c2seg train` wrote (it records the run)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("run"), dict)


def effective_config(opts: TrainOptions, base: HighDANConfig | None, track: str) -> HighDANConfig:
    """The config (`base`, else --config, else paper) with the command line's overrides applied."""
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
    if opts.augment is not None:
        train = dataclasses.replace(train, augment=opts.augment)
    predict = cfg.predict
    if opts.stitch is not None and opts.stitch != predict.stitch:
        # another stitch: its own default window and overlap, unless given below
        predict = dataclasses.replace(predict, stitch=opts.stitch, window=None, overlap=None)
    if opts.eval_window is not None:
        predict = dataclasses.replace(predict, window=opts.eval_window)
    if opts.eval_overlap is not None:
        predict = dataclasses.replace(predict, overlap=opts.eval_overlap)
    return dataclasses.replace(cfg, loss=loss, train=train, predict=predict).validate()


def starting_point(opts: TrainOptions, out: Path, track: str) -> tuple[dict | None, HighDANConfig]:
    """(the checkpoint state to resume from, or None for a fresh run; the config the run runs under)."""
    if opts.init_backbone is not None and opts.init_from is not None:
        raise C2SegError("--init-backbone and --init-from exclude each other: --init-from loads the whole generator")
    if opts.resume and (opts.init_backbone is not None or opts.init_from is not None):
        raise C2SegError("--init-backbone and --init-from start a new run; --resume continues one from its last.pt")
    if not opts.resume:
        if (out / LAST).exists():
            raise C2SegError(f"{out} already holds a run ({LAST}); pass --resume to continue it or choose another --out")
        # a new run writes into a new or empty folder, or one an earlier run began (its config.json)
        claim_folder(out, verb="train", marker=CONFIG, ours=_is_run_config, force=True)
        return None, effective_config(opts, None, track)
    if not (out / LAST).is_file():
        raise C2SegError(f"nothing to resume: no {LAST} in {out}")
    state = ckpt.read_checkpoint(out / LAST)
    saved = HighDANConfig.from_dict(state["config"])
    if opts.config is not None and get_config(opts.config).model != saved.model:
        raise C2SegError(f"--config {opts.config} describes another network than {out / LAST}; "
                         "resume without --config")
    if state.get("run", {}).get("track") not in (None, track):
        raise C2SegError(f"{out / LAST} is a track {state['run']['track']} run, not {track}")
    return state, effective_config(opts, saved, track)
