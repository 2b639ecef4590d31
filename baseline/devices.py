"""Where the network runs and in what precision: one home for the device rules.

Training and prediction share them, so a model trained with ``--device X`` and predicted with
``--device X`` runs the same way:

- ``auto`` means CUDA when torch sees it, else the CPU; asking for CUDA without one is a user error;
- bf16 autocast and the channels_last memory format are CUDA-only (see :func:`amp_active`);
- the CPU thread count (:func:`set_threads`): unless told, one less than the CPUs this process may
  use, so that a 2-CPU machine runs one thread: torch's default of one thread per core slowed
  training several-fold there whenever anything else ran beside it (bench/threads.py).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

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


#: torch's own thread count as this process started (its count of physical cores, or OMP_NUM_THREADS).
TORCH_DEFAULT_THREADS = torch.get_num_threads()

#: cgroup v2's CPU quota of this process's group: "QUOTA PERIOD" in microseconds, or "max PERIOD".
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_quota(path: Path = CGROUP_CPU_MAX) -> float | None:
    """The CPUs a cgroup v2 quota allows (1.5 for "150000 100000"); None without a quota or a file."""
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (rounded down,
    at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cpu_max)
    if quota is not None:
        cpus = min(cpus, int(quota))
    return max(1, cpus)


def default_threads(cpus: int, torch_default: int) -> int:
    """Threads for `cpus` usable CPUs: one CPU left as headroom (the data loading, the system, other
    jobs), at least one, never more than torch's own default (its count of physical cores)."""
    return max(1, min(cpus - 1, torch_default))


def set_threads(requested: int | None) -> int:
    """Set torch's CPU thread count and return it: `requested` (--threads), else OMP_NUM_THREADS
    when set (the user's or torchrun's choice, which torch already follows), else
    :func:`default_threads` of :func:`usable_cpus`."""
    if requested is not None:
        if requested < 1:
            raise C2SegError("--threads must be at least 1")
        threads = requested
    elif os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    else:
        threads = default_threads(usable_cpus(), TORCH_DEFAULT_THREADS)
    torch.set_num_threads(threads)
    return threads
