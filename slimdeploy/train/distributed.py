"""DistributedDataParallel helpers: one code path for one process and for `torchrun`.

Under torchrun (WORLD_SIZE > 1 in the environment) `init_from_env` starts the process group
(gloo for a CPU run, nccl for a CUDA one: the backend follows the device the work runs on, not what
the machine has); every helper here is a no-op in a single process. Ranks sample the
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

from ..errors import SlimdeployError


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def backend() -> str | None:
    """The process group's backend (gloo or nccl), None when not running distributed."""
    return dist.get_backend() if active() else None


def is_main() -> bool:
    return rank() == 0


def resolve_device(name: str = "cpu") -> torch.device:
    """The device this process trains on: ``cpu``, or ``cuda`` (under torchrun, the GPU of its local rank)."""
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda":
        raise SlimdeployError(f"--device must be cpu or cuda, got {name!r}")
    if not torch.cuda.is_available():
        raise SlimdeployError("--device cuda: CUDA is not available here (no GPU, or a CPU-only PyTorch); "
                              "use --device cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if local >= torch.cuda.device_count():
        raise SlimdeployError(f"--device cuda: torchrun started more processes on this machine than it has GPUs "
                              f"({torch.cuda.device_count()}); start one per GPU (--nproc_per_node "
                              f"{torch.cuda.device_count()}) or use --device cpu")
    return torch.device("cuda", local)


def deterministic_cuda() -> None:
    """Make CUDA kernels reproducible (cuDNN's deterministic algorithms, cuBLAS's fixed workspace).

    Call before the first CUDA operation. Without it, atomics in convolution backward passes make two
    runs of the same seed drift apart, and a resumed run cannot end with an uninterrupted run's weights.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def init_from_env(device: torch.device | str = "cpu") -> bool:
    """Start the process group when launched by torchrun; True when running distributed.

    The backend follows `device`: nccl when this process works on a GPU, gloo on the CPU (also on
    a machine that has GPUs: nccl cannot reduce CPU tensors).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        device = torch.device(device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
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
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.tolist()


def _collective_device() -> torch.device:
    """Where a tensor made for a collective must live: nccl reduces GPU tensors only."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


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
