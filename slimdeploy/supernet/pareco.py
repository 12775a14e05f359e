"""PareCO / Joslim: per-group widths optimized jointly with the shared weights (arXiv 2007.11752).

Every τ steps ("temporal sharing") the losses of every visited width vector are re-measured on
the current batch with the current weights, and MOBO-RS (`slimdeploy.mobo`) proposes
`num_sampled` new ones for target costs drawn from Pareto-aware bins; those are trained for
the next τ steps. Each step trains, on one batch, the full network on the labels and every
active width (the sampled ones and the narrowest) on the full network's detached output
(in-place distillation), one optimizer step for all (ALGORITHMS.md §5).

Modes: "pareco" as above; "uniform" — the paper's Slim baseline, the same pipeline with one
multiplier for every group (s ~ U[α_min, 1], no surrogate). TwoStage trains with random
heterogeneous widths (the sandwich supernet) and runs `mobo_search` after training.

Choices where §5 leaves one [Ours]:
* the cost is the fitted latency model's ratio to the original (MACs ratio when no latency
  source is given); α_min is the width space's narrowest choice (`min_fraction`, default 0.2;
  the papers used 0.42), so budgets down to the latency floor are reachable;
* τ = steps × num_sampled / visits, so about `visits` width vectors are visited (the paper
  aims at 1,000 on ImageNet; a few dozen fit a CPU run);
* the largest network is trained on plain cross-entropy (no label smoothing), as the sandwich
  supernet is, so the methods differ only in which widths they train;
* history losses are cross-entropy on the batch with batch statistics (BatchNorm in training
  mode), as training sees them; after training they are re-measured once on a fixed batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..mobo import History, MoboSampler, successive_fronts
from ..space import Widths
from ..train import EpochBatches, LoopState, distillation_loss, logits_of, unpack
from ..train.evaluate import model_device, preserved_buffers
from .core import Supernet
from .runner import run_training
from .training import StepFn, SupernetTraining

MODES = ("pareco", "uniform")


@dataclass
class ParecoSettings:
    """PareCO's own settings (the searcher's options; defaults from ALGORITHMS.md §5, scaled to a CPU)."""

    visits: int = 60            # width vectors visited over the whole training (sets τ)
    num_sampled: int = 2        # new width vectors per round
    prior_points: int = 20      # uniform warm-up visits before the surrogates are used
    beta: float = 0.1
    baseline: float = -3.0      # the scalarization's reference point (standardized units)
    rho: float = 1e-6
    bins: int = 50
    pareto_aware: bool = True
    raw_samples: int = 1000
    search_steps: int = 10
    tolerance: float = 0.02

    @classmethod
    def pick(cls, params: Mapping[str, Any]) -> "ParecoSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def sampler(self, choices: Mapping[str, list[int]], cost: Callable[[Mapping[str, int]], float],
                seed: int) -> MoboSampler:
        return MoboSampler(choices, cost, beta=self.beta, reference=self.baseline, rho=self.rho, bins=self.bins,
                           pareto_aware=self.pareto_aware, raw_samples=self.raw_samples,
                           search_steps=self.search_steps, tolerance=self.tolerance, prior_points=self.prior_points,
                           seed=seed)


@dataclass
class ParecoRun:
    """The step's state: the history, the widths being trained, and the time spent in the surrogates."""

    history: History
    active: list[dict[str, int]] = field(default_factory=list)
    gp_seconds: list[float] = field(default_factory=list)
    surrogates: dict[str, Any] = field(default_factory=dict)  # where the next GP fits start

    def to_json(self) -> dict[str, Any]:
        return {"history": self.history.to_json(), "active": self.active, "gp_seconds": self.gp_seconds,
                "surrogates": self.surrogates}

    def load_json(self, data: Mapping[str, Any]) -> None:
        self.history = History.from_json(data["history"])
        self.active = [dict(a) for a in data["active"]]
        self.gp_seconds = list(data["gp_seconds"])
        self.surrogates = dict(data.get("surrogates") or {})


def batch_losses(supernet: Supernet, widths: list[Mapping[str, int]], inputs: torch.Tensor,
                 labels: torch.Tensor) -> list[float]:
    """Cross-entropy of each width vector on one batch, BatchNorm on batch statistics, running stats untouched."""
    was_training = supernet.training
    out = []
    with preserved_buffers(supernet.model), torch.no_grad():
        supernet.train()
        for w in widths:
            with supernet.active(w):
                out.append(float(F.cross_entropy(logits_of(supernet(inputs)), labels)))
    supernet.train(was_training)
    return out


def propose(sampler: MoboSampler, run: ParecoRun, mode: str, n: int, rng: np.random.Generator) -> list[dict]:
    """`n` new width vectors: uniform multipliers (Slim) or MOBO-RS (PareCO)."""
    if mode == "uniform":
        return [sampler.uniform(float(rng.uniform(0.0, 1.0))) for _ in range(n)]
    before = len(sampler.gp_seconds)
    sampler.restore(run.surrogates)
    proposals = sampler.propose(run.history, n, rng)
    run.surrogates = sampler.state()
    run.gp_seconds += sampler.gp_seconds[before:]
    return proposals


def pareco_step(supernet: Supernet, run: ParecoRun, sampler: MoboSampler, mode: str, tau: int, n: int,
                seed: int) -> StepFn:
    """A `TrainLoop` step: every `tau` steps re-measure the history and sample widths; train full + active."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    full, smallest = sampler.full(), sampler.smallest()

    def step(model: nn.Module, batch, state: LoopState) -> dict[str, float] | None:
        inputs, labels = unpack(batch, model_device(model))
        if inputs.shape[0] < 2:
            return None
        if state.step % tau == 0 or not run.active:
            if run.history.visits:
                run.history.rescore(batch_losses(supernet, [v.widths for v in run.history.visits], inputs, labels))
            rng = np.random.default_rng([seed, state.step])
            run.active = propose(sampler, run, mode, n, rng)
            for w in run.active:
                run.history.add(w, sampler.cost(w))
        losses, target = [], None
        for w in [full] + run.active + [smallest]:
            with supernet.active(w):
                logits = logits_of(model(inputs))
                if target is None:
                    loss = F.cross_entropy(logits, labels)
                    target = logits.detach()
                else:
                    loss = distillation_loss(logits, target, temperature=1.0)
                loss.backward()
            losses.append(float(loss.detach()))
        return {"loss": losses[0], "loss_smallest": losses[-1]}
    return step


def train_joint(supernet: Supernet, train_set, training: SupernetTraining, settings: ParecoSettings,
                cost: Callable[[Mapping[str, int]], float], mode: str = "pareco", kind: str = "pareco",
                out=None, resume: bool = False, say: Callable[[str], None] = print) -> ParecoWeights:
    """Train `supernet` in place with PareCO (or Slim's uniform widths); checkpointed in `out`, resumable."""
    choices = {g.name: supernet.choices(g.name) for g in supernet.space}
    sampler = settings.sampler(choices, cost, training.seed)
    steps = len(EpochBatches(train_set, training.batch_size, seed=training.seed)) * training.epochs
    tau = max(1, round(steps * settings.num_sampled / max(settings.visits, 1)))
    run = ParecoRun(sampler.history())
    say(f"{kind}: training shared weights and widths jointly for {training.epochs} epoch(s) "
        f"(τ = {tau} steps, about {settings.visits} width vectors)")
    step = pareco_step(supernet, run, sampler, mode, tau, settings.num_sampled, training.seed)
    result = run_training(supernet, train_set, training, step, run, kind, out=out, resume=resume, say=say)
    return ParecoWeights(supernet, run, sampler, mode, kind, {**result, "tau": tau})


def mobo_search(supernet: Supernet, sampler: MoboSampler, batch, visits: int, n: int, seed: int,
                say: Callable[[str], None] = lambda text: None) -> ParecoRun:
    """TwoStage's second stage: MOBO-RS on fixed trained weights, losses on one fixed batch."""
    run = ParecoRun(sampler.history())
    inputs, labels = unpack(batch, model_device(supernet))
    rng = np.random.default_rng(seed)
    for _ in range(4 * visits):
        if len(run.history) >= visits:
            break
        wanted = min(n, visits - len(run.history))  # exactly `visits`, also after a round that found a duplicate
        fresh = [w for w in propose(sampler, run, "pareco", wanted, rng) if run.history.add(w, sampler.cost(w))]
        for w, loss in zip(fresh, batch_losses(supernet, fresh, inputs, labels)):
            next(v for v in run.history.visits if v.widths == w).loss = loss
        if len(run.history) % 10 < n:
            say(f"  twostage search: {len(run.history)}/{visits} width vectors visited")
    return run


class ParecoWeights:
    """Shared weights trained by PareCO (or Slim / TwoStage) with the history of visited widths.

    The searcher asks `candidates()` (the successive Pareto fronts of the history, as PareCO
    selects after training) and `propose(target, n, cost)` (more widths aimed at one budget).
    """

    def __init__(self, supernet: Supernet, run: ParecoRun, sampler: MoboSampler, mode: str, kind: str,
                 training: dict | None = None):
        self.supernet, self.run, self.sampler, self.mode, self.kind = supernet, run, sampler, mode, kind
        self.training = training or {}
        self.score_kind = f"{kind} supernet accuracy after BatchNorm recalibration on the search split"

    def scorer(self, calibration: list, held_out: list):
        return self.supernet.scorer(calibration, held_out)

    def extract(self, widths: Widths, calibration=None) -> nn.Module:
        return self.supernet.extract(widths, calibration=calibration)

    def candidates(self, until_cost: float = 0.9) -> list[dict[str, int]]:
        """Widths on the history's successive (cost, loss) Pareto fronts, plus the narrowest and the full."""
        visits = self.run.history.scored()
        taken = successive_fronts([(v.cost, v.loss) for v in visits], until_cost)
        out = [visits[i].widths for i in taken]
        for w in (self.sampler.smallest(), self.sampler.full()):
            if w not in out:
                out.append(w)
        return out

    def propose(self, target: float, n: int, cost: Callable[[Mapping[str, int]], float],
                seed: int = 0) -> list[dict[str, int]]:
        """`n` widths aimed at cost `target`: uniform levels for Slim, MOBO-RS at that target otherwise."""
        if self.mode == "uniform":
            lo, hi = 0.0, 1.0  # the widest multiplier whose cost meets the target, then narrower ones
            for _ in range(20):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if cost(self.sampler.uniform(mid)) <= target else (lo, mid)
            levels = [lo * (1 - 0.05 * k) for k in range(n)]
            return [self.sampler.uniform(s) for s in levels]
        rng = np.random.default_rng([seed, len(self.run.history)])
        return self.sampler.propose(self.run.history, n, rng, target=target, cost=cost)

    def summary(self) -> dict:
        gp = self.run.gp_seconds
        return {**self.supernet.summary(), "method": self.kind, "mode": self.mode, "visited": len(self.run.history),
                "gp_seconds_per_round": round(float(np.mean(gp)), 4) if gp else None, "gp_rounds": len(gp),
                "training": {k: v for k, v in self.training.items() if k != "history"}}
