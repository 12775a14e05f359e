"""DistributedDataParallel helpers: one code path for one process and for `torchrun`.

Under torchrun (WORLD_SIZE > 1 in the environment) `init_from_env` starts the process group
(gloo on CPU, nccl on CUDA); every helper here is a no-op in a single process. Ranks sample the
same widths because their generators are seeded alike; BatchNorm statistics recalibrated on
each rank's shard are averaged; only rank 0 writes files.
"""
from __future__ import annotations

import hashlib
import os

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> bool:
    """Start the process group when launched by torchrun; True when running distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return True


def wrap(module: nn.Module) -> nn.Module:
    """`module` in DistributedDataParallel when distributed, else unchanged."""
    if not active():
        return module
    device = next(module.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def average_batchnorm_stats(model: nn.Module) -> None:
    """Combine BatchNorm running statistics recalibrated on each rank's shard (equal batch counts).

    Means are averaged; variances combined exactly as E[var] + Var[mean] across ranks.
    """
    if not active():
        return
    n = world_size()
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.running_mean is not None:
            mean, var = m.running_mean, m.running_var
            second = var + mean * mean
            dist.all_reduce(mean)
            dist.all_reduce(second)
            mean /= n
            var.copy_(second / n - mean * mean)


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum of a list of numbers over ranks (the list itself in one process)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def checksum(model: nn.Module) -> str:
    """A digest of every parameter's bytes: equal on every rank when their weights are identical."""
    digest = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def gather_checksums(model: nn.Module) -> list[str]:
    """Every rank's `checksum`, in rank order (one entry in a single process)."""
    mine = checksum(model)
    if not active():
        return [mine]
    out: list = [None] * world_size()
    dist.all_gather_object(out, mine)
    return out


def barrier() -> None:
    if active():
        dist.barrier()
