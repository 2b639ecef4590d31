"""One checkpoint file per training state: weights, optimisers, config, step, metrics, RNG.

The file is a plain dict saved with torch.save and read back with weights_only=True, so a
checkpoint from a stranger cannot run code when loaded. Everything in it is a tensor, a
number, a string or a container of those (RNG states are converted to tensors/lists).
Writes go to a temporary file first and are renamed into place, so an interrupted save never
leaves a half-written last.pt behind.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from c2seg_kit import __version__
from c2seg_kit.errors import C2SegError
from c2seg_kit.outputs import new_file, output_file

from .config import HighDANConfig
from .model import HighDAN

FORMAT = "c2seg-highdan/1"
PARTS = ("generator", "d0", "d1")  # the three networks, stored separately like the authors' files


# --- RNG states ---------------------------------------------------------------------------

def rng_state() -> dict:
    """Every generator a training step may draw from, in a weights_only-loadable form."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- save / load ----------------------------------------------------------------------------

def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


def _cpu(obj: Any) -> Any:
    """A copy of a (nested) state with every tensor on the CPU, so any machine can load it."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def make_state(model: torch.nn.Module, cfg: HighDANConfig, *, step: int, opt_g=None, opt_d=None,
               metrics: dict | None = None, best: dict | None = None, run: dict | None = None,
               with_rng: bool = True) -> dict:
    model = _unwrap(model)
    state = {
        "format": FORMAT,
        "kit_version": __version__,
        "torch_version": str(torch.__version__),
        "config": cfg.to_dict(),
        "step": int(step),
        "metrics": metrics or {},
        "best": best or {},
        "run": run or {},
    }
    for part in PARTS:
        state[part] = _cpu(getattr(model, part).state_dict())
    if opt_g is not None:
        state["opt_g"] = _cpu(opt_g.state_dict())
    if opt_d is not None:
        state["opt_d"] = _cpu(opt_d.state_dict())
    if with_rng:
        state["rng"] = rng_state()
    return state


def _write_atomically(path: str | os.PathLike, write) -> Path:
    """``write(tmp)`` into a temporary file beside ``path`` (the mode the umask gives), then a rename
    (:func:`c2seg_kit.outputs.new_file`: never through a link or over a folder)."""
    path = Path(path)
    with new_file(path) as tmp:
        write(tmp)
    return path


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename."""
    return _write_atomically(path, lambda tmp: torch.save(state, tmp))


def copy_checkpoint(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """The same checkpoint under another name, atomically, without serialising it again."""
    with open(source, "rb") as src, output_file(path, force=True, need_folder=False) as dst:
        shutil.copyfileobj(src, dst)
    return Path(path)


def first_line(exc: BaseException) -> str:
    """An exception's first line (its type when it says nothing), short enough for a one-line error."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def load_file(path: str | os.PathLike, what: str) -> Any:
    """torch.load with weights_only=True (a stranger's file cannot run code); a missing or unreadable
    file is a one-line C2SegError naming `what` it should have been."""
    path = Path(path)
    if not path.is_file():
        raise C2SegError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch.load fails on junk in many ways; all mean "not a checkpoint"
        raise C2SegError(f"{path} is not a readable {what} ({first_line(e)})") from None


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict, checked; any problem is a one-line C2SegError."""
    return check_state(load_file(path, "HighDAN checkpoint"), path)


def check_state(state: Any, path: str | os.PathLike) -> dict:
    """`state` (as loaded from `path`) if it is a complete kit checkpoint, else a one-line C2SegError."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise C2SegError(f"{path} is not a c2seg HighDAN checkpoint (expected format {FORMAT!r})")
    missing = [k for k in ("config", "step", *PARTS) if k not in state]
    if missing:
        raise C2SegError(f"{path} lacks {', '.join(missing)}: not a complete HighDAN checkpoint")
    return state


def build_model(state: dict, *, path: str | os.PathLike = "checkpoint"):
    """A HighDAN with the checkpoint's config and weights (strict: every key must match)."""
    try:
        cfg = HighDANConfig.from_dict(state["config"])
        model = HighDAN(cfg)
        for part in PARTS:
            getattr(model, part).load_state_dict(state[part], strict=True)
    except C2SegError:
        raise
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise C2SegError(f"{path}: weights do not fit its config ({first_line(e)})") from None
    return model, cfg


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu"):
    """(model, config) from a checkpoint file; the model is in eval mode on `device`."""
    state = read_checkpoint(path)
    model, cfg = build_model(state, path=path)
    return model.to(device).eval(), cfg


def restore_training(state: dict, model: HighDAN, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer) -> None:
    """Put a training state back as make_state took it: the weights, both optimisers and every RNG."""
    for part in PARTS:
        getattr(model, part).load_state_dict(state[part])
    opt_g.load_state_dict(state["opt_g"])
    opt_d.load_state_dict(state["opt_d"])
    set_rng_state(state["rng"])
