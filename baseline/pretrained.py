"""Where a run's weights start: ImageNet HRNetV2-W48 (``--init-backbone``) or another run (``--init-from``).

What the authors load (their training scripts, read for the facts):

- AB starts from ``hrnetv2_w48_imagenet_pretrained.pth`` (the HRNet image-classification release).
  They drop its stem (``conv1``, ``bn1``, ``conv2``, ``bn2``: their HSI stem has another input width
  and they drop its BN and second conv with it) and anything named ``last_layer``, and load every
  remaining key their model also has: stage 1 (``layer1``), the transitions and stages 2-4. Their
  stages keep one module (the release has 1, 4 and 3 modules in stages 2, 3, 4) and fewer blocks
  (3 and 1 per branch in stages 3 and 4, the release 4), so the first module's first blocks load
  and the rest of the file is unused. Then they copy ``layer1`` into the MSI and SAR stage 1. The
  stems (all three), the head and the classifier keep their random initialisation.
- BW starts from the AB run's best generator, every key of it (``strict=False`` over a model of the
  same shape: in effect all of them); the discriminators start afresh.

:func:`init_backbone` does the former for the kit's network: the expected keys are this network's
stage 1 (each modality's, all from ``layer1``), transitions and stages 2-4, named as the authors'
(importer.py's rules) -- the names the HRNet release and timm's ``hrnet_w48`` share. A file that
is not a state_dict, maps fewer than 90 % of the expected keys, or holds a key of the wrong shape is
refused in one line naming the first offending key, before anything is trained.
:func:`init_from` does the latter, from a kit checkpoint or the authors' generator file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from c2seg_kit.errors import C2SegError

from . import checkpoint as ckpt
from .importer import authors_generator_key, is_authors_generator, load_authors_state_dicts, without_module_prefix
from .model import HighDAN

MIN_MAPPED = 0.9  # the share of the expected backbone keys a file must provide
BACKBONE_PARTS = ("stage1.", "transitions.", "stages.")  # what the authors load (see the docstring)
_COPIED_STAGE1 = ("msi_layer1.", "sar_layer1.")  # filled from the file's layer1, as the authors copy it


def _state_dict(path: Path) -> dict[str, Tensor]:
    state = ckpt.load_file(path, "backbone weights file")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # a training checkpoint wrapping its weights
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise C2SegError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return without_module_prefix(dict(state))


def backbone_key_map(model: HighDAN) -> dict[str, str]:
    """``{our generator key: the pretrained file's key}`` over the keys the authors load."""
    out = {}
    for key in model.generator.state_dict():
        if not key.startswith(BACKBONE_PARTS):
            continue
        theirs = authors_generator_key(key)
        for copied in _COPIED_STAGE1:
            if theirs.startswith(copied):
                theirs = "layer1." + theirs[len(copied):]
        out[key] = theirs
    return out


def init_backbone(model: HighDAN, path: str | os.PathLike) -> dict:
    """Load ImageNet HRNetV2-W48 weights into the stage 1 of every modality and the shared stages
    2-4; returns what was mapped. Refuses (C2SegError, one line) what the module docstring says."""
    path = Path(path)
    weights = _state_dict(path)
    ours = model.generator.state_dict()
    mapping = backbone_key_map(model)
    counted = [k for k in mapping if not k.endswith("num_batches_tracked")]  # absent from older files
    loaded, missing = {}, []
    for key, theirs in mapping.items():
        if theirs not in weights:
            missing.append((key, theirs))
            continue
        value = weights[theirs]
        if value.shape != ours[key].shape:
            raise C2SegError(f"{path}: {theirs!r} has shape {tuple(value.shape)}, {key} needs "
                             f"{tuple(ours[key].shape)}: not HRNetV2-W48 weights for this network")
        loaded[key] = value
    mapped = sum(1 for k in counted if k in loaded)
    if mapped < MIN_MAPPED * len(counted):
        first = next(theirs for key, theirs in missing if key in counted)
        raise C2SegError(f"{path} maps {mapped} of {len(counted)} backbone keys (< {MIN_MAPPED:.0%}); the first "
                         f"missing is {first!r}: not HRNetV2-W48 weights in the HRNet or timm layout")
    model.generator.load_state_dict(loaded, strict=False)
    used = {mapping[k] for k in loaded}
    by_part: dict[str, int] = {}
    for key in counted:
        if key in loaded:
            part = _part(key)
            by_part[part] = by_part.get(part, 0) + 1
    return {"backbone": str(path), "mapped": mapped, "expected": len(counted), "by_part": by_part,
            "first_missing": next((t for k, t in missing if k in counted), None),
            "file_keys_unused": len(set(weights) - used)}


def _part(key: str) -> str:
    """Where a generator key lives, for the report: stage1 hsi, transition 1, stage 3..."""
    head, index, *_ = key.split(".")
    if head == "stage1":
        return f"stage1 {index}"
    return f"{'transition' if head == 'transitions' else 'stage'} {int(index) + (1 if head == 'transitions' else 2)}"


def init_from(model: HighDAN, path: str | os.PathLike) -> dict:
    """Start the generator from another run's (a kit checkpoint) or from the authors' generator file;
    every key must be present with its shape. The discriminators keep their fresh initialisation."""
    path = Path(path)
    state = ckpt.load_file(path, "--init-from checkpoint")
    if is_authors_generator(state):
        load_authors_state_dicts(model, state)
        return {"from": str(path), "layout": "authors"}
    state = ckpt.check_state(state, path)
    weights, ours = state["generator"], model.generator.state_dict()
    for key, value in ours.items():
        if key not in weights:
            raise C2SegError(f"{path} lacks generator key {key!r}: another network than this run's")
        if weights[key].shape != value.shape:
            raise C2SegError(f"{path}: generator key {key!r} has shape {tuple(weights[key].shape)}, this run needs "
                             f"{tuple(value.shape)} (other bands or widths?)")
    extra = sorted(set(weights) - set(ours))
    if extra:
        raise C2SegError(f"{path} has generator key {extra[0]!r} this run's network lacks: another network")
    model.generator.load_state_dict(weights)
    run = state.get("run") or {}
    return {"from": str(path), "layout": "kit", "step": int(state["step"]), "track": run.get("track")}


def describe(report: dict) -> str:
    """One line for the user about where the weights came from."""
    if "backbone" in report:
        parts = ", ".join(f"{part} {n}" for part, n in report["by_part"].items())
        return (f"init: {report['mapped']} of {report['expected']} backbone keys from {report['backbone']} "
                f"({parts}; stage 1 of every modality from the file's layer1); the stems, head and "
                "classifier start at random, as the authors'")
    origin = f"{report.get('track')} run at step {report['step']}" if report.get("layout") == "kit" else "the authors' file"
    return f"init: generator from {report['from']} ({origin}); the discriminators start afresh"
