"""Where the network runs and in what precision: one home for the device rules.

Training and prediction share them, so a model trained with ``--device X`` and predicted with
``--device X`` runs the same way:

- ``auto`` means CUDA when torch sees it, else the CPU; asking for CUDA without one is a user error;
- bf16 autocast and the channels_last memory format are CUDA-only (see :func:`amp_active`).
"""

from __future__ import annotations

import contextlib

import torch

from c2seg_kit.errors import C2SegError


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """auto / cpu / cuda / cuda:N -> a torch.device; asking for CUDA without one is a user error.

    Under torchrun, plain ``cuda`` means this process's own GPU (``cuda:<local_rank>``).
    """
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise C2SegError(f"unknown device {name!r}; expected auto, cpu or cuda")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise C2SegError("--device cuda asked for, but torch sees no CUDA device")
        if local_rank is not None and name == "cuda":
            name = f"cuda:{local_rank}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)


def amp_active(device: torch.device, requested: bool = True) -> bool:
    """Whether bf16 autocast is on: when requested, and on CUDA only.

    The CPU stays float32 whatever is requested, as training and prediction on the CPU always
    have: bf16 on a CPU pays off only with hardware support, and float32 keeps CPU runs (the
    tests, the demo) on the numbers they were checked with. (`train_step` called directly with
    ``amp=True`` on the CPU used to autocast; it now follows this rule too.)
    """
    return requested and device.type == "cuda"


def autocast(device: torch.device, amp: bool):
    """The context for forward passes: bf16 autocast when :func:`amp_active`, else nothing."""
    if amp_active(device, amp):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last_on(device: torch.device) -> bool:
    """channels_last on CUDA (cuDNN's fast convolution layout under bf16); the CPU keeps NCHW."""
    return device.type == "cuda"


def place_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model on `device`, in channels_last where :func:`channels_last_on` says so."""
    model = model.to(device)
    if channels_last_on(device):
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch tensor on `device`; image batches (4-D) in channels_last when asked, else contiguous."""
    x = x.to(device, non_blocking=True)
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return x
