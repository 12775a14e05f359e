"""One training run of shared weights with any step function, checkpointed with the step's own state.

PareCO and CafeNet train a `Supernet` with their own steps (MOBO-sampled widths, min-min
placements) on the same open `TrainLoop` as the sandwich rule. A checkpoint (written atomically
every `checkpoint_every` steps and at the end, when `out` is given) holds the weights, the
optimizer, the loop position and RNG, the channel order, the settings, and the step's own state
as plain JSON-like values (a PareCO history, ...), so a killed run resumed from it ends like an
uninterrupted one. Single process only (the sandwich supernet covers torchrun).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch.utils.data import Dataset

from ..errors import SlimdeployError
from ..progress import progress
from ..train import EpochBatches, Hook, LoopState, TrainLoop, cosine_schedule, sgd_optimizer
from .core import Supernet
from .store import CHECKPOINT, prepare_dir
from .training import StepFn, SupernetTraining

CHECKPOINT_FORMAT = "slimdeploy.shared-weights-checkpoint/1"


class StepState(Protocol):
    """What a step keeps between steps, saved with each checkpoint."""

    def to_json(self) -> dict[str, Any]: ...

    def load_json(self, data: dict[str, Any]) -> None: ...


class _Every(Hook):
    def __init__(self, every: int, action: Callable[[TrainLoop], None]):
        self.every, self.action = every, action

    def on_step(self, loop, record) -> None:
        if loop.state.step % self.every == 0:
            self.action(loop)

    def on_end(self, loop) -> None:
        self.action(loop)


class _Progress(Hook):
    def __init__(self, say, label: str, every_seconds: float = 10.0):
        self.say, self.label, self.every, self.last = say, label, every_seconds, 0.0

    def on_step(self, loop, record) -> None:
        now, line = time.monotonic(), None
        if now - self.last >= self.every or record["batch"] == record["batches"]:
            self.last = now
            line = (f"  {self.label} epoch {record['epoch']}/{record['epochs']} batch {record['batch']}/"
                    f"{record['batches']} loss {record['loss']:.4f}")
        progress(self.say, f"{self.label} epoch {record['epoch']}/{record['epochs']}", record["batch"],
                 record["batches"], line, f"loss {record['loss']:.4f}")


def run_training(supernet: Supernet, train_set: Dataset, config: SupernetTraining, step: StepFn, state: StepState,
                 kind: str, out: str | Path | None = None, resume: bool = False,
                 say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `supernet` in place with `step`; returns {"history", "steps", "seconds", "config"}."""
    config.check()
    out = Path(out) if out is not None else None
    if resume and out is None:
        raise SlimdeployError("resume needs the output directory of the interrupted run")
    if out is not None:
        prepare_dir(out, resume)  # new or empty; with resume, one holding a checkpoint
    started = time.perf_counter()
    batches = EpochBatches(train_set, config.batch_size, seed=config.seed)
    if len(batches) == 0:
        raise SlimdeployError(f"the training set ({len(train_set)} samples) gives no batch of {config.batch_size}")
    optimizer = sgd_optimizer(supernet, config.lr, config.weight_decay, config.momentum)
    schedule = cosine_schedule(config.lr, len(batches) * config.epochs, config.warmup_steps)
    hooks: list[Hook] = [_Progress(say, kind)]
    if out is not None:
        def save(loop: TrainLoop) -> None:
            loop.capture_rng()
            _save(out / CHECKPOINT, {"format": CHECKPOINT_FORMAT, "kind": kind, "model": supernet.model.state_dict(),
                                     "optimizer": optimizer.state_dict(), "loop": loop.state.to_dict(),
                                     "order": {n: o.tolist() for n, o in supernet.order.items()},
                                     "config": asdict(config), "state": state.to_json()})
        hooks.append(_Every(config.checkpoint_every, save))
    loop = TrainLoop(supernet, optimizer, step, batches, config.epochs, schedule, hooks, seed=config.seed)
    if resume:
        loop.state = _restore(out / CHECKPOINT, kind, supernet, optimizer, config, state)
        say(f"resuming {kind} training at epoch {loop.state.epoch + 1}, batch {loop.state.batch}")
    loop.run()
    supernet.eval()
    return {"history": loop.state.history, "steps": loop.state.step,
            "seconds": round(time.perf_counter() - started, 1), "config": asdict(config)}


def _save(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(data, tmp)
    os.replace(tmp, path)


def _restore(path: Path, kind: str, supernet: Supernet, optimizer, config: SupernetTraining,
             state: StepState) -> LoopState:
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a truncated or foreign file raises many kinds
        raise SlimdeployError(f"cannot read {path} ({type(exc).__name__}); the file is damaged or not a slimdeploy "
                              f"checkpoint") from None
    if data.get("format") != CHECKPOINT_FORMAT or data.get("kind") != kind:
        raise SlimdeployError(f"{path} is not a {kind} training checkpoint")
    saved = {k: v for k, v in data["config"].items() if k not in ("epochs", "checkpoint_every")}
    if saved != {k: v for k, v in asdict(config).items() if k in saved}:
        raise SlimdeployError(f"the run in {path.parent} was started with other settings; resume it with the same "
                              f"ones, or start a new run in another directory")
    supernet.order = {n: torch.as_tensor(o, dtype=torch.long) for n, o in data["order"].items()}
    supernet.model.load_state_dict(data["model"])
    optimizer.load_state_dict(data["optimizer"])
    state.load_json(data["state"])
    return LoopState(**data["loop"])
