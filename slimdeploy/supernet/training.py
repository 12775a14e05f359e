"""Training a supernet: the sandwich rule with in-place distillation, checkpointed and resumable.

Each step trains, on one mini-batch, the largest network (labels, optionally distilled from the
original model), the smallest and n−2 random widths (soft targets from the largest network's
detached output), accumulating gradients for one optimizer step (US-Nets; ALGORITHMS.md §1.5).
The widths of step t are drawn from a generator seeded with (seed, t): the same on every rank
and after a resume. Checkpoints (weights, optimizer, loop state and RNG) are written atomically
every `checkpoint_every` steps and at the end; a run restarted from one ends with the same
weights as an uninterrupted run of the same seed.
"""
from __future__ import annotations

import contextlib
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import SlimdeployError
from ..progress import progress
from ..train import EpochBatches, Hook, LoopState, TrainLoop, cosine_schedule, distillation_loss, sgd_optimizer
from ..train import distributed as dist
from ..train.evaluate import logits_of, model_device
from ..train.finetune import unpack
from .core import Supernet
from .store import load_checkpoint, prepare_dir, save_checkpoint, write_supernet

StepFn = Callable[[nn.Module, Any, LoopState], dict[str, float] | None]


@dataclass
class SupernetTraining:
    """How a supernet is trained (recorded in supernet.json)."""

    epochs: int = 1
    lr: float = 0.01
    batch_size: int = 64
    seed: int = 0
    sandwich: int = 4               # networks per step: largest, smallest and sandwich−2 random
    weight_decay: float = 5e-5
    momentum: float = 0.9
    warmup_steps: int = 0
    teacher_weight: float = 0.0     # > 0: the largest network also distils from the original model
    checkpoint_every: int = 50      # steps between checkpoints (and one at the end)

    def check(self) -> None:
        if self.epochs < 0 or self.batch_size < 2 or self.sandwich < 2 or self.checkpoint_every < 1:
            raise SlimdeployError("supernet training needs epochs >= 0, batch_size >= 2, sandwich >= 2 and "
                                  "checkpoint_every >= 1")
        if not self.lr > 0 or not 0 <= self.teacher_weight <= 1:
            raise SlimdeployError("supernet training needs lr > 0 and teacher_weight in [0, 1]")


def sampled_widths(supernet: Supernet, n: int, seed: int, step: int) -> list:
    """The widths step `step` trains: largest, smallest, then n−2 random (same on every rank)."""
    rng = random.Random(seed * 1_000_003 + step)
    return [supernet.largest(), supernet.smallest()] + [supernet.random_widths(rng) for _ in range(n - 2)]


def sandwich_step(supernet: Supernet, n: int = 4, seed: int = 0, teacher: nn.Module | None = None,
                  teacher_weight: float = 0.0) -> StepFn:
    """A `TrainLoop` step: the sandwich rule with in-place distillation, gradients accumulated."""
    def step(model: nn.Module, batch, state: LoopState) -> dict[str, float] | None:
        inputs, labels = unpack(batch, model_device(model))
        if inputs.shape[0] < 2:
            return None
        widths = sampled_widths(supernet, n, seed, state.step)
        losses, target = [], None
        for i, w in enumerate(widths):
            last = i == len(widths) - 1
            sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
            with sync, supernet.active(w):
                logits = logits_of(model(inputs))
                if target is None:
                    loss = F.cross_entropy(logits, labels)
                    if teacher is not None and teacher_weight > 0:
                        with torch.no_grad():
                            soft = logits_of(teacher(inputs))
                        loss = (1 - teacher_weight) * loss + teacher_weight * distillation_loss(logits, soft)
                    target = logits.detach()
                else:
                    loss = distillation_loss(logits, target, temperature=1.0)
                loss.backward()
            losses.append(float(loss.detach()))
        return {"loss": losses[0], "loss_smallest": losses[1]}
    return step


class _Checkpoints(Hook):
    """Writes a checkpoint every `every` steps and at the end (rank 0 only); records each."""

    def __init__(self, out: Path, every: int, supernet: Supernet, config: SupernetTraining, say):
        self.out, self.every, self.supernet, self.config, self.say = out, every, supernet, config, say

    def on_step(self, loop: TrainLoop, record) -> None:
        if loop.state.step % self.every == 0:
            self._save(loop)

    def on_end(self, loop: TrainLoop) -> None:
        self._save(loop)

    def _save(self, loop: TrainLoop) -> None:
        loop.capture_rng()
        if dist.is_main():
            save_checkpoint(self.out, self.supernet, loop.optimizer, loop.state, self.config)
        dist.barrier()


class _Progress(Hook):
    def __init__(self, say, every_seconds: float = 10.0):
        self.say, self.every, self.last = say, every_seconds, 0.0

    def on_step(self, loop, record) -> None:
        now, line = time.monotonic(), None
        note = f"loss {record['loss']:.4f} (smallest {record['loss_smallest']:.4f})"
        if now - self.last >= self.every or record["batch"] == record["batches"]:
            self.last = now
            line = f"  supernet epoch {record['epoch']}/{record['epochs']} batch {record['batch']}/{record['batches']} {note}"
        progress(self.say, f"supernet epoch {record['epoch']}/{record['epochs']}", record["batch"], record["batches"],
                 line, note)


def train_supernet(supernet: Supernet, train_set: Dataset, config: SupernetTraining, out: str | Path | None = None,
                   resume: bool = False, teacher: nn.Module | None = None,
                   say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `supernet` in place on `train_set`; with `out`, checkpoint there and write the supernet.

    With `resume`, training continues from `out`'s last checkpoint (weights, optimizer, position,
    RNG). Under torchrun every rank trains its shard of each epoch with identical widths; rank 0
    writes. Returns {"history", "steps", "checksums" (one per rank), "seconds"}.
    """
    config.check()
    out = Path(out) if out is not None else None
    if out is not None and dist.is_main():
        prepare_dir(out, resume)
    dist.barrier()
    started = time.perf_counter()
    batches = EpochBatches(train_set, config.batch_size, seed=config.seed, rank=dist.rank(),
                           world_size=dist.world_size())
    if len(batches) == 0:
        raise SlimdeployError(f"the training set ({len(train_set)} samples) gives no batch of {config.batch_size}")
    model = dist.wrap(supernet)
    optimizer = sgd_optimizer(supernet, config.lr, config.weight_decay, config.momentum)
    step = sandwich_step(supernet, config.sandwich, config.seed, teacher, config.teacher_weight)
    schedule = cosine_schedule(config.lr, len(batches) * config.epochs, config.warmup_steps)
    hooks: list[Hook] = [_Progress(say)]
    if out is not None:
        hooks.append(_Checkpoints(out, config.checkpoint_every, supernet, config, say))
    loop = TrainLoop(model, optimizer, step, batches, config.epochs, schedule, hooks, seed=config.seed)
    if resume:
        if out is None:
            raise SlimdeployError("resume needs the output directory of the interrupted run")
        state = load_checkpoint(out, supernet, optimizer, config)
        if state is not None:
            loop.state = state
            say(f"resuming at epoch {state.epoch + 1}, batch {state.batch}, step {state.step}")
    if teacher is not None:
        teacher.eval()
    loop.run()
    dist.average_batchnorm_stats(supernet.model)  # each rank's running stats saw only its shard
    checksums = dist.gather_checksums(supernet)
    if len(set(checksums)) > 1:
        raise SlimdeployError(f"ranks ended with different weights ({checksums}); distributed training diverged")
    result = {"history": loop.state.history, "steps": loop.state.step, "checksums": checksums,
              "world_size": dist.world_size(), "seconds": round(time.perf_counter() - started, 1),
              "config": asdict(config)}
    if out is not None and dist.is_main():
        write_supernet(out, supernet, result)
    dist.barrier()
    supernet.eval()
    return result
