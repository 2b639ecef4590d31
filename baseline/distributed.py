"""Data-parallel training under torchrun, without wrapping the model.

One HighDAN step runs the generator twice (source, target) and the discriminators on
several inputs before each optimiser step, which DistributedDataParallel's one-forward-
one-backward bookkeeping does not allow. The equivalent we use instead: every rank computes
its own gradients, an optimiser pre-step hook averages them across ranks (what DDP's
reducer would have done), and after each step the buffers (BatchNorm running statistics)
are broadcast from rank 0, as DDP does with broadcast_buffers=True. Ranks therefore hold
identical weights after every step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU) if not already joined."""
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def _average_grads(params: list[torch.Tensor], world_size: int) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    # One all-reduce per dtype on a flattened copy: far fewer messages than one per tensor.
    for dtype in {g.dtype for g in grads}:
        group = [g for g in grads if g.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat)
        flat /= world_size
        offset = 0
        for g in group:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def average_gradients_before_step(optimizer: torch.optim.Optimizer, info: DistInfo) -> None:
    """Make `optimizer.step()` first average its parameters' gradients over all ranks."""
    if not info.enabled:
        return

    def hook(opt, args, kwargs):
        _average_grads([p for g in opt.param_groups for p in g["params"]], info.world_size)

    optimizer.register_step_pre_hook(hook)


def broadcast_module(module: torch.nn.Module, info: DistInfo, *, buffers_only: bool = False) -> None:
    """Copy rank 0's buffers (and parameters unless buffers_only) to every rank."""
    if not info.enabled:
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


def data_parallel(model: torch.nn.Module, optimizers: tuple[torch.optim.Optimizer, ...], info: DistInfo) -> None:
    """Start every rank from rank 0's weights, and have each optimiser average gradients first."""
    broadcast_module(model, info)
    for optimizer in optimizers:
        average_gradients_before_step(optimizer, info)
