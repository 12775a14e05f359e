"""Fine-tuning a pruned student, optionally distilling from its unpruned teacher.

Recipe (the usual one for recovering a pruned CNN): SGD, momentum 0.9 with Nesterov, learning
rate decayed by a per-step cosine from `lr` to 0, weight decay on weights only (not on biases
or normalization parameters). SGD rather than AdamW because the models come from SGD-trained
checkpoints and SGD at a small rate moves them least from the solution they already hold;
the defaults (lr 0.01, weight decay 5e-5) are those of a fine-tune, not of training from
scratch (`train_classifier` defaults to lr 0.05).

With a teacher, the loss is ``(1 - a) * CE(student, labels) + a * T^2 * KL(p_teacher || p_student)``
with both distributions softened by temperature T (Hinton et al. 2015; T^2 keeps the soft-target
gradients on the scale of the hard-label ones). Defaults a = 0.5, T = 4.

Nothing is printed; pass `progress` to draw a bar.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from slimdeploy.errors import SlimdeployError

from .evaluate import logits_of, model_device
from . import distributed as dist
from .batches import EpochBatches
from .loop import Hook, IterableBatches, StepFn, TrainLoop, cosine_schedule

Progress = Callable[[dict[str, Any]], None]


def finetune(
    student: nn.Module,
    train_loader: Iterable,
    epochs: int,
    lr: float = 0.01,
    teacher: nn.Module | None = None,
    kd_weight: float = 0.5,
    temperature: float = 4.0,
    weight_decay: float = 5e-5,
    momentum: float = 0.9,
    progress: Progress | None = None,
    max_batches_per_epoch: int | None = None,
    seed: int = 0,
    hooks: Sequence[Hook] = (),
) -> list[dict[str, Any]]:
    """Train `student` in place on `(inputs, labels)` batches for `epochs`; returns the history.

    `teacher` (optional) is run in eval mode without gradients and distilled with weight
    `kd_weight` at `temperature`; its train/eval flag is restored afterwards. `progress` is
    called after every step with {"epoch", "epochs", "batch", "batches", "loss", "lr"} (1-based;
    "batches" is None when the loader has no length); `hooks` are `TrainLoop` hooks (evaluation,
    checkpointing). `seed` seeds the loop's own forked RNG (dropout), never the caller's, so a
    run is reproducible given the same batch order. Under torchrun the student is wrapped in
    DistributedDataParallel and each rank trains its share of the loader's dataset. Batches of one sample are skipped
    (BatchNorm cannot train on them). The student ends in eval mode; with epochs=0 it is
    returned untouched.

    Returns one record per epoch: {"epoch", "loss" (mean over its steps), "seconds", "lr" (at
    the epoch's start), "batches" (steps taken)}; JSON-ready, empty for epochs=0.
    """
    _check(epochs, lr, kd_weight, temperature, weight_decay, momentum, max_batches_per_epoch)
    if epochs == 0:
        return []
    optimizer = sgd_optimizer(student, lr, weight_decay, momentum)
    batches = _batches(train_loader, max_batches_per_epoch, seed)
    total = len(batches) * epochs
    use_teacher = teacher is not None and kd_weight > 0
    teacher_mode = teacher.training if teacher is not None else False
    loop = TrainLoop(dist.wrap(student), optimizer,
                     classification_step(teacher if use_teacher else None, kd_weight, temperature),
                     batches, epochs, cosine_schedule(lr, total) if total else None,
                     hooks=[*([ProgressHook(progress)] if progress else []), *hooks], seed=seed)
    try:
        if use_teacher:
            teacher.eval()
        return loop.run()
    finally:
        student.eval()
        if teacher is not None:
            teacher.train(teacher_mode)


def _batches(train_loader: Iterable, max_batches: int | None, seed: int):
    """The loader's batches; under torchrun, this rank's share of its dataset (`EpochBatches`)."""
    dataset, size = getattr(train_loader, "dataset", None), getattr(train_loader, "batch_size", None)
    if dist.active() and dataset is not None and size:
        return EpochBatches(dataset, size, seed=seed, rank=dist.rank(), world_size=dist.world_size(),
                            limit=max_batches * size * dist.world_size() if max_batches else None)
    return IterableBatches(train_loader, max_batches)


def sgd_optimizer(model: nn.Module, lr: float, weight_decay: float = 5e-5, momentum: float = 0.9) -> torch.optim.SGD:
    """SGD (Nesterov when momentum > 0) with weight decay on weights only, not on biases or norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SlimdeployError("the model has no trainable parameters (all have requires_grad=False)")
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=momentum, nesterov=momentum > 0)


def classification_step(teacher: nn.Module | None = None, kd_weight: float = 0.5,
                        temperature: float = 4.0) -> StepFn:
    """A step: cross-entropy on the labels, mixed with distillation from `teacher` when given."""
    def step(model: nn.Module, batch, state) -> dict[str, float] | None:
        inputs, labels = unpack(batch, model_device(model))
        if inputs.shape[0] < 2:
            return None
        logits = logits_of(model(inputs))
        loss = F.cross_entropy(logits, labels)
        if teacher is not None:
            with torch.no_grad():
                target = logits_of(teacher(inputs.to(model_device(teacher)))).to(logits.device)
            loss = (1 - kd_weight) * loss + kd_weight * distillation_loss(logits, target, temperature)
        loss.backward()
        return {"loss": float(loss.detach())}
    return step


class ProgressHook(Hook):
    """Calls `progress(record)` after every step."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def on_step(self, loop, record) -> None:
        self.progress({k: record[k] for k in ("epoch", "epochs", "batch", "batches", "loss", "lr")})


def train_classifier(
    model: nn.Module,
    train_loader: Iterable,
    epochs: int,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    progress: Progress | None = None,
    max_batches_per_epoch: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Train `model` from its current weights with cross-entropy only (`finetune` without a teacher).

    Defaults suit training a small model from scratch (lr 0.05, weight decay 5e-4).
    """
    return finetune(model, train_loader, epochs, lr=lr, weight_decay=weight_decay, momentum=momentum,
                    progress=progress, max_batches_per_epoch=max_batches_per_epoch, seed=seed)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 4.0) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)


def unpack(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise SlimdeployError(f"training needs (inputs, labels) batches, got {type(batch).__name__}")
    inputs, labels = batch[0], batch[1]
    if not isinstance(inputs, torch.Tensor):
        raise SlimdeployError(f"batch inputs must be a tensor, got {type(inputs).__name__}")
    labels = torch.as_tensor(labels)
    return inputs.to(device, non_blocking=True), labels.to(device, torch.long, non_blocking=True).view(-1)


def _check(epochs, lr, kd_weight, temperature, weight_decay, momentum, max_batches) -> None:
    if not isinstance(epochs, int) or epochs < 0:
        raise SlimdeployError(f"epochs must be a non-negative integer, got {epochs!r}")
    if not lr > 0:
        raise SlimdeployError(f"learning rate must be positive, got {lr!r}")
    if not 0.0 <= kd_weight <= 1.0:
        raise SlimdeployError(f"kd_weight (distillation share of the loss) must be in [0, 1], got {kd_weight!r}")
    if not temperature > 0:
        raise SlimdeployError(f"temperature must be positive, got {temperature!r}")
    if weight_decay < 0 or not 0 <= momentum < 1:
        raise SlimdeployError(f"need weight_decay >= 0 and 0 <= momentum < 1, got {weight_decay!r}, {momentum!r}")
    if max_batches is not None and max_batches < 1:
        raise SlimdeployError(f"max_batches_per_epoch must be at least 1, got {max_batches!r}")
