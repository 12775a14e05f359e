"""Training an adaptive-width network: the negative ELBO by backprop, widths moving every step.

The loss of a batch (ALGORITHMS.md §4, item 7) is the task loss, here cross-entropy mixed with
distillation from the original model, plus the priors divided by the training-set size N:
‖θ‖²/(2σ_θ²N) over the weights in use, and optionally −log N(λ; μ_λ, σ_λ²)/N on the rates. The
rates learn through the importance that scales every consumer; after each optimizer step the
widths are recomputed from them (`AdaptiveWidth.update_widths`), resetting the optimizer state of
the channels that left or entered. The weight prior replaces the optimizer's weight decay, so
masked channels receive no update at all. Checkpoints (weights, rates, widths, optimizer, loop
state, RNG) are written atomically; a resumed run ends with the weights of an uninterrupted one.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ..errors import SlimdeployError
from ..progress import progress
from ..train import EpochBatches, Hook, LoopState, TrainLoop, classification_step, cosine_schedule, sgd_optimizer
from ..train import distributed as dist
from .config import AdaptiveTraining
from .network import AdaptiveWidth
from .store import load_checkpoint, save_checkpoint, write_adaptive

StepFn = Callable[[nn.Module, Any, LoopState], dict[str, float] | None]


def prior_loss(net: AdaptiveWidth, config: AdaptiveTraining) -> torch.Tensor:
    """−log p(θ) − log p(λ) up to constants: ‖θ‖²/(2σ_θ²) over the weights in use, (λ−μ)²/(2σ_λ²)."""
    total = torch.zeros((), device=net.rho.device)
    masks = net._masks  # the channels past the learned widths (0) are not in use
    for name, p in net.model.named_parameters():
        if p.ndim > 1 and p.requires_grad:
            mask = masks.get(name)
            total = total + ((p * (mask != 0)) if mask is not None else p).pow(2).sum()
    total = total / (2 * config.prior_sigma ** 2)
    if config.rate_prior_std > 0:
        adaptive = torch.tensor([p.adaptive for p in net.plans], device=net.rho.device)
        lam = net.rates()[adaptive]
        total = total + ((lam - config.rate_prior_mean) ** 2).sum() / (2 * config.rate_prior_std ** 2)
    return total


def adaptive_step(net: AdaptiveWidth, config: AdaptiveTraining, n_train: int,
                  teacher: nn.Module | None = None) -> StepFn:
    """A `TrainLoop` step: the task loss (labels, distillation) then the priors / N; the rates' gradient scaled."""
    use_teacher = teacher is not None and config.teacher_weight > 0
    task_step = classification_step(teacher if use_teacher else None, config.teacher_weight, config.temperature)

    def step(model: nn.Module, batch, state: LoopState) -> dict[str, float] | None:
        record = task_step(model, batch, state)  # backward of the task loss
        if record is None:
            return None
        prior = prior_loss(net, config) / n_train
        prior.backward()  # accumulates onto the task's gradients
        if net.rho.grad is not None:
            net.rho.grad.mul_(config.rate_lr)
        return {"loss": record["loss"] + float(prior.detach()), "task": record["loss"],
                "width": net.width_fraction()}
    return step


class WidthUpdates(Hook):
    """After every optimizer step: widths recomputed from the rates, optimizer state kept consistent."""

    def __init__(self, net: AdaptiveWidth):
        self.net = net

    def on_step(self, loop: TrainLoop, record) -> None:
        self.net.update_widths(loop.optimizer)

    def on_epoch(self, loop: TrainLoop, record) -> None:
        record["widths"] = self.net.learned_widths()
        record["width_fraction"] = round(self.net.width_fraction(), 4)


class _Checkpoints(Hook):
    def __init__(self, out: Path, every: int, net: AdaptiveWidth, config: AdaptiveTraining):
        self.out, self.every, self.net, self.config = out, every, net, config

    def on_step(self, loop: TrainLoop, record) -> None:
        if loop.state.step % self.every == 0:
            self.save(loop)

    def on_end(self, loop: TrainLoop) -> None:
        self.save(loop)

    def save(self, loop: TrainLoop) -> None:
        loop.capture_rng()
        save_checkpoint(self.out, self.net, loop.optimizer, loop.state, self.config)


class _Progress(Hook):
    def __init__(self, say, every_seconds: float = 10.0):
        self.say, self.every, self.last = say, every_seconds, 0.0

    def on_step(self, loop, record) -> None:
        now, line = time.monotonic(), None
        note = f"loss {record['task']:.4f}, width {record['width']:.1%} of the channels"
        if now - self.last >= self.every or record["batch"] == record["batches"]:
            self.last = now
            line = f"  adaptive epoch {record['epoch']}/{record['epochs']} batch {record['batch']}/{record['batches']} {note}"
        progress(self.say, f"adaptive epoch {record['epoch']}/{record['epochs']}", record["batch"], record["batches"],
                 line, note)


def train_adaptive(net: AdaptiveWidth, train_set: Dataset, config: AdaptiveTraining, out: str | Path | None = None,
                   resume: bool = False, teacher: nn.Module | None = None,
                   say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `net` in place on `train_set`; with `out`, checkpoint there and write the network.

    With `resume`, training continues from `out`'s last checkpoint. Returns {"history" (per epoch,
    with the widths), "steps", "seconds", "config", "widths"}; `net.trained` holds the same.
    """
    config.check()
    if dist.world_size() > 1:
        raise SlimdeployError("adaptive-width training runs in one process; run it without torchrun")
    if abs(config.quantile - net.quantile) > 1e-12:
        raise SlimdeployError(f"the network uses quantile {net.quantile}, the training settings {config.quantile}")
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    batches = EpochBatches(train_set, config.batch_size, seed=config.seed)
    if len(batches) == 0:
        raise SlimdeployError(f"the training set ({len(train_set)} samples) gives no batch of {config.batch_size}")
    optimizer = sgd_optimizer(net, config.lr, 0.0, config.momentum)
    hooks: list[Hook] = [WidthUpdates(net), _Progress(say)]
    if out is not None:
        hooks.append(_Checkpoints(out, config.checkpoint_every, net, config))
    loop = TrainLoop(net, optimizer, adaptive_step(net, config, len(train_set), teacher), batches, config.epochs,
                     cosine_schedule(config.lr, len(batches) * config.epochs, config.warmup_steps), hooks,
                     seed=config.seed)
    if resume:
        if out is None:
            raise SlimdeployError("resume needs the directory of the interrupted run")
        state = load_checkpoint(out, net, optimizer, config)
        if state is not None:
            loop.state = state
            say(f"resuming adaptive-width training at epoch {state.epoch + 1}, batch {state.batch}, "
                f"step {state.step}")
    teacher_mode = teacher.training if teacher is not None else False
    if teacher is not None:
        teacher.eval()
    try:
        loop.run()
    finally:
        if teacher is not None:
            teacher.train(teacher_mode)
    net.trained = {"history": loop.state.history, "steps": loop.state.step, "config": asdict(config),
                   "seconds": round(time.perf_counter() - started, 1), "widths": net.learned_widths()}
    if out is not None:
        write_adaptive(out, net, net.trained)
    net.eval()
    return net.trained
