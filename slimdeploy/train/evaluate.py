"""Scoring a model without training it: BatchNorm recalibration and top-1 accuracy.

A freshly pruned network keeps the BatchNorm running statistics of its parent, which no longer
match the thinner layers; re-estimating them on a few training batches recovers most of the
accuracy that can be had without gradient steps. `estimate_accuracy` does that on a copy and
scores held-out batches, cheaply enough to rank many candidates in a width search;
`settle_batchnorm` does it after fine-tuning, where low-momentum statistics lag the weights.

Batches may be tensors or ``(inputs, labels, ...)`` tuples/lists; inputs are moved to the
model's device. A model may return a tensor, a tuple/list (first element), an object with
``.logits`` (torchvision's Inception/GoogLeNet outputs, Hugging Face) or a dict with "logits".
"""
from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from slimdeploy.errors import SlimdeployError

Batch = Any  # a Tensor, or a (inputs, labels, ...) tuple/list


def _tracking_batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of `model` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None]


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Batch], max_batches: int | None = 5) -> int:
    """Re-estimate every BatchNorm's running mean/var from `batches`; returns how many were used.

    The stats are reset and accumulated as an exact cumulative average (momentum=None) over up
    to `max_batches` batches (None: all), under no_grad. Only the BatchNorm layers run in train
    mode; every other module stays in eval mode (dropout off, no auxiliary heads). Afterwards
    each module's momentum and train/eval flag are what they were. Batches of one sample are
    skipped (BatchNorm cannot train on them). With no usable batch, nothing is changed.
    """
    layers = _tracking_batchnorms(model)
    if not layers or (max_batches is not None and max_batches <= 0):
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers}
    device = model_device(model)
    used = 0
    try:
        with torch.no_grad():
            for batch in batches:
                inputs = _inputs(batch, device)
                if _batch_size(inputs) < 2:
                    continue
                if used == 0:  # reset only once there is data to replace the stats with
                    model.eval()
                    for m in layers:
                        m.reset_running_stats()
                        m.momentum = None
                        m.train()
                model(inputs)
                used += 1
                if max_batches is not None and used >= max_batches:
                    break
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training
    return used


def accuracy(model: nn.Module, loader_or_batches: Iterable[Batch], max_batches: int | None = None) -> float:
    """Top-1 accuracy in [0, 1] over `(inputs, labels)` batches (up to `max_batches`), in eval mode.

    Runs under no_grad and restores the model's train/eval flag. Raises SlimdeployError when
    there is no labelled sample to score.
    """
    correct, total = count_correct(model, itertools.islice(loader_or_batches, max_batches))
    if total == 0:
        raise SlimdeployError("no labelled samples to measure accuracy on (empty loader?)")
    return correct / total


def settle_batchnorm(model: nn.Module, batches: Iterable[Batch], held_out: Iterable[Batch],
                     max_batches: int | None = 20) -> dict[str, Any] | None:
    """After training, re-estimate BatchNorm statistics in place when that scores no worse on `held_out`.

    Running statistics trail the weights by their momentum: after a short fine-tuning of a model
    whose BatchNorm momentum is low (0.01 in TensorFlow-ported networks such as EfficientNet-Lite),
    they still describe the unpruned parent, and the model collapses in eval mode although it
    trained well. The statistics are re-estimated over up to `max_batches` of `batches` and kept
    when held-out accuracy does not drop; otherwise the old ones are put back. Returns
    {"batchnorm": "re-estimated" | "kept", "held_out_before", "held_out_after"}, or None for a
    model without BatchNorm.
    """
    layers = _tracking_batchnorms(model)
    if not layers:
        return None
    held_out = list(held_out)
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
    before = accuracy(model, held_out)
    if recalibrate_batchnorm(model, batches, max_batches=max_batches) == 0:
        return {"batchnorm": "kept", "held_out_before": before, "held_out_after": before}
    after = accuracy(model, held_out)
    if after < before:
        with torch.no_grad():
            for m, (mean, var, count) in zip(layers, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
    return {"batchnorm": "re-estimated" if after >= before else "kept", "held_out_before": before,
            "held_out_after": after}


def count_correct(model: nn.Module, batches: Iterable[Batch]) -> tuple[int, int]:
    """(top-1 correct, samples) over `(inputs, labels)` batches, in eval mode under no_grad.

    Counts, not a ratio, so shards scored on several processes add up exactly.
    """
    was_training = model.training
    device = model_device(model)
    correct = total = 0
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise SlimdeployError("accuracy needs (inputs, labels) batches, got "
                                          f"{type(batch).__name__}")
                logits = logits_of(model(_inputs(batch, device)))
                labels = torch.as_tensor(batch[1]).to(logits.device).view(-1)
                if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
                    raise SlimdeployError(
                        f"model output {tuple(logits.shape)} does not match {labels.shape[0]} labels; "
                        "accuracy needs N x num_classes logits")
                correct += int((logits.argmax(1) == labels).sum())
                total += int(labels.shape[0])
    finally:
        model.train(was_training)
    return correct, total


def estimate_accuracy(model: nn.Module, train_loader: Iterable[Batch], val_loader: Iterable[Batch],
                      calib_batches: int = 5, eval_batches: int | None = 10) -> float:
    """Accuracy of `model` after BatchNorm recalibration, without touching `model` itself.

    A copy has its BatchNorm stats re-estimated on `calib_batches` batches of `train_loader`
    (0: keep the stats it has), then is scored on up to `eval_batches` batches of `val_loader`
    (None: all). For scores comparable across candidates, give the same batches each time:
    an unshuffled loader, or lists of batches taken once.
    """
    try:
        scratch = copy.deepcopy(model)
    except Exception:  # a module that cannot be deep-copied: recalibrate in place, then put back
        return recalibrated_accuracy(model, train_loader, val_loader, calib_batches, eval_batches, restore=True)
    if calib_batches:
        recalibrate_batchnorm(scratch, train_loader, max_batches=calib_batches)
    return accuracy(scratch, val_loader, max_batches=eval_batches)


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor of a model output (tensor, tuple/list, `.logits`, or {"logits": ...})."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise SlimdeployError(f"cannot find logits in the model's output ({type(output).__name__})")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty module)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _inputs(batch: Batch, device: torch.device) -> torch.Tensor:
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(inputs, torch.Tensor):
        raise SlimdeployError(f"batch inputs must be a tensor, got {type(inputs).__name__}")
    return inputs.to(device, non_blocking=True)


def _batch_size(inputs: torch.Tensor) -> int:
    return int(inputs.shape[0]) if inputs.ndim else 1


def recalibrated_accuracy(model: nn.Module, train_batches: Iterable[Batch], val_batches: Iterable[Batch],
                          calib_batches: int | None = 5, eval_batches: int | None = None, restore: bool = False) -> float:
    """`estimate_accuracy` without a copy: recalibrate `model`'s own BatchNorm stats, then score it.

    For shared-weight supernets and large models, where a copy per candidate is too costly. With
    `restore`, every buffer (running stats) is put back afterwards; otherwise the model keeps the
    recalibrated statistics.
    """
    with preserved_buffers(model) if restore else contextlib.nullcontext():
        if calib_batches is None or calib_batches > 0:
            recalibrate_batchnorm(model, train_batches, max_batches=calib_batches)
        return accuracy(model, val_batches, max_batches=eval_batches)


@contextlib.contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Every buffer of `model` (BatchNorm running statistics) is put back as it was after the block."""
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])
