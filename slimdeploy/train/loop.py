"""The training loop, opened up: a replaceable step, hooks, and a state that checkpoints and resumes.

`TrainLoop.run()` walks epochs of batches; for each batch it sets the learning rate, zeroes the
gradients, calls the *step* (forward and backward: a plain supervised step, a distillation step,
a supernet's sandwich step...) and takes the optimizer step. Hooks see every step and epoch end
(progress, evaluation, checkpointing). `LoopState` (epoch, batch, step, history) plus the
model's, optimizer's and the step's RNG states are what a checkpoint needs; a loop restored from
one continues exactly where it stopped when its batches are an `EpochBatches` (same order for the
same seed and epoch, started mid-epoch).

The loop never seeds the global RNG. It runs inside `torch.random.fork_rng` seeded from `seed`,
so dropout is reproducible and the caller's RNG is left as it was.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import torch
import torch.nn as nn

from slimdeploy.errors import SlimdeployError

StepFn = Callable[[nn.Module, Any, "LoopState"], dict[str, float]]


class Batches(Protocol):
    """What the loop iterates: the batches of an epoch, from a given position."""

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


@dataclass
class LoopState:
    """Where training is: `epoch` (0-based, the one running), `batch` done in it, `step` in all."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    epoch_loss: float = 0.0   # sum of the losses of the current epoch's steps so far
    epoch_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=dict)  # the global RNG inside the loop's fork

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Hook:
    """Called by the loop; override what you need. `loop.state` says where training is."""

    def on_step(self, loop: "TrainLoop", record: dict[str, float]) -> None:
        pass

    def on_epoch(self, loop: "TrainLoop", record: dict[str, Any]) -> None:
        pass

    def on_end(self, loop: "TrainLoop") -> None:
        pass


class IterableBatches:
    """Any iterable of batches (a DataLoader, a list) as `Batches`; a restart skips the done batches."""

    def __init__(self, iterable: Iterable, max_batches: int | None = None):
        self.iterable, self.max_batches = iterable, max_batches

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Any]:
        for i, batch in enumerate(self.iterable):
            if self.max_batches is not None and i >= self.max_batches:
                return
            if i >= start:
                yield batch

    def __len__(self) -> int:
        try:
            n = len(self.iterable)  # type: ignore[arg-type]
        except TypeError:
            n = self.max_batches or 0
        return min(n, self.max_batches) if self.max_batches is not None else n


def cosine_schedule(lr: float, total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """Per-step learning rate: linear warm-up, then a cosine from `lr` to 0 at `total_steps`."""
    def rate(step: int) -> float:
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        return 0.5 * lr * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))
    return rate


class TrainLoop:
    """Epochs of `step(model, batch, state)` + optimizer steps, with hooks and a resumable state."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: StepFn, batches: Batches | Iterable,
                 epochs: int, schedule: Callable[[int], float] | None = None, hooks: Sequence[Hook] = (),
                 seed: int = 0):
        if not isinstance(epochs, int) or epochs < 0:
            raise SlimdeployError(f"epochs must be a non-negative integer, got {epochs!r}")
        self.model, self.optimizer, self.step_fn = model, optimizer, step
        self.batches = batches if hasattr(batches, "epoch") else IterableBatches(batches)
        self.epochs, self.schedule, self.hooks, self.seed = epochs, schedule, list(hooks), seed
        self.state = LoopState()

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def run(self) -> list[dict[str, Any]]:
        """Train from `state` to the last epoch; returns the per-epoch history."""
        grad_mode = torch.is_grad_enabled()
        torch.set_grad_enabled(True)  # training needs gradients whatever the caller's mode
        try:
            with torch.random.fork_rng(devices=_devices(self.model)):
                self._restore_rng()
                while self.state.epoch < self.epochs:
                    self._run_epoch()
                for hook in self.hooks:
                    hook.on_end(self)
        finally:
            torch.set_grad_enabled(grad_mode)
            self.optimizer.zero_grad(set_to_none=True)
        return self.state.history

    def capture_rng(self) -> None:
        """Record the loop's global RNG state in `state.rng` (hooks call this before checkpointing)."""
        self.state.rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.state.rng["cuda"] = torch.cuda.get_rng_state_all()

    def _restore_rng(self) -> None:
        if not self.state.rng:
            torch.manual_seed(self.seed)  # inside the fork: the caller's RNG is untouched
            return
        torch.set_rng_state(self.state.rng["cpu"])
        if "cuda" in self.state.rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.state.rng["cuda"])

    def _run_epoch(self) -> None:
        state = self.state
        self.model.train()
        started = time.perf_counter()
        epoch_lr = self.schedule(state.step) if self.schedule else self.optimizer.param_groups[0]["lr"]
        for batch in self.batches.epoch(state.epoch, state.batch):
            if self.schedule:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.schedule(state.step)
            self.optimizer.zero_grad(set_to_none=True)
            record = self.step_fn(self.model, batch, state)
            if record is None:  # the step skipped this batch (e.g. a single sample)
                state.batch += 1
                continue
            loss = record["loss"]
            if not math.isfinite(loss):
                raise SlimdeployError(
                    f"training diverged (loss {loss} at epoch {state.epoch + 1}, batch {state.batch + 1}); "
                    f"lower the learning rate (now {self.optimizer.param_groups[0]['lr']:g})")
            self.optimizer.step()
            state.step += 1
            state.batch += 1
            state.epoch_loss, state.epoch_steps = state.epoch_loss + loss, state.epoch_steps + 1
            record = {**record, "epoch": state.epoch + 1, "epochs": self.epochs, "batch": state.batch,
                      "batches": self.steps_per_epoch or None, "lr": self.optimizer.param_groups[0]["lr"]}
            for hook in self.hooks:
                hook.on_step(self, record)
        if state.epoch_steps == 0:
            raise SlimdeployError("the training loader gave no usable batch (empty, or batches of one sample)")
        record = {"epoch": state.epoch + 1, "loss": state.epoch_loss / state.epoch_steps,
                  "seconds": time.perf_counter() - started, "lr": epoch_lr, "batches": state.epoch_steps}
        state.history.append(record)
        state.epoch, state.batch, state.epoch_loss, state.epoch_steps = state.epoch + 1, 0, 0.0, 0
        for hook in self.hooks:
            hook.on_epoch(self, record)


def _devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
