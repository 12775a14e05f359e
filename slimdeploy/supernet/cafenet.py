"""CafeNet: locally free weight sharing, min-min training, latency-sensitive bins (arXiv 2102.05258).

Locally free sharing. A group's channels are ranked by importance (`Supernet.order`). Width c
keeps its **base** channels, the first c − r·u in that order, plus r **free** units of u
channels chosen among the 2r units of the **local zone** [c − r·u, c + r·u) around the
boundary (u = the group's width step, lcm(align, divisor); r = `zone`). With r = 1 a group has
two placements at each width: the prefix, or the unit just past the boundary instead of the
one just before it. At full width (or where the zone does not fit) only the prefix exists.
Placement 0 is always the prefix, so `zone=0` is the fixed-prefix sharing of the plain supernet.

Min-min training. Each step trains the full network on the labels, then the narrowest widths
and n − 2 widths drawn uniformly over each group's bins: for each, `placements` random
placements are scored without gradients (distillation loss against the full network's
output) and only the lowest-loss one is trained.

Latency-sensitive bins. A group's searchable widths are taken from its choices (already
narrowed to the latency staircase's steps where the latency model has per-node times) walking
down from full: a width starts a new bin when the predicted latency saved since the last bin
reaches Δ = (latency(full) − latency(narrowest)) / (granularity × groups), the narrowest choice
always kept. Cheap groups get few coarse bins, expensive ones fine bins.

Choices where ALGORITHMS.md §3 leaves one [Ours]: the zone is counted in width steps u, not
bins (bins may be wide; the free channels stay next to the boundary); a width's score uses
the placement with the lowest cross-entropy on one calibration batch (batch statistics),
then BatchNorm recalibration and held-out accuracy for that placement only; the delivered
model keeps exactly that placement's channels.
"""
from __future__ import annotations

import itertools
import random
import zlib
from typing import Callable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SlimdeployError
from ..space import Widths
from ..train import LoopState, distillation_loss, logits_of, unpack
from ..train import distributed as dist
from ..train.evaluate import count_correct, model_device, preserved_buffers, recalibrate_batchnorm
from .core import Keep, Supernet
from .training import StepFn

Placement = dict[str, int]  # group → index of its placement (0 = the prefix)


def latency_bins(choices: Mapping[str, list[int]], latency: Callable[[Mapping[str, int]], float],
                 granularity: float = 4.0) -> dict[str, list[int]]:
    """Per group, the widths a search may take: ascending, bins of comparable latency (see the module doc)."""
    full = {g: c[-1] for g, c in choices.items()}
    smallest = {g: c[0] for g, c in choices.items()}
    delta = (latency(full) - latency(smallest)) / (granularity * max(len(choices), 1))
    bins = {}
    for g, widths in choices.items():
        kept, last = [widths[-1]], latency(full)
        for w in reversed(widths[:-1]):
            here = latency({**full, g: w})
            if last - here >= delta > 0:
                kept.append(w)
                last = here
        if widths[0] not in kept:
            kept.append(widths[0])
        bins[g] = sorted(kept)
    return bins


class LocalFreeSharing:
    """Channel sets of base + free channels for any widths and placement (see the module doc)."""

    def __init__(self, supernet: Supernet, zone: int = 1):
        if zone < 0:
            raise SlimdeployError(f"the free zone must be >= 0 width steps, got {zone}")
        self.supernet, self.zone = supernet, zone
        self.units = {g.name: g.unit(supernet.align) for g in supernet.space}
        self.full = {g.name: g.width for g in supernet.space}

    def _zone(self, name: str, width: int) -> int:
        """r actually usable at `width`: the zone must fit below the boundary and above it."""
        u = self.units[name]
        return max(0, min(self.zone, width // u, (self.full[name] - width) // u))

    def options(self, name: str, width: int) -> list[tuple[int, ...]]:
        """The placements of group `name` at `width`: which r of the zone's 2r units are kept (prefix first)."""
        r = self._zone(name, width)
        return list(itertools.combinations(range(2 * r), r)) if r else [()]

    def keep(self, widths: Widths | Mapping[str, int], placement: Placement | None = None) -> Keep:
        mapping = widths.widths if isinstance(widths, Widths) else widths
        keep = {}
        for name, full in self.full.items():
            width = mapping.get(name, full)
            order = self.supernet.order[name]
            kept = torch.zeros(full, dtype=torch.bool)
            r, u = self._zone(name, width), self.units[name]
            if r == 0:
                kept[order[:width]] = True
            else:
                base = width - r * u
                kept[order[:base]] = True
                chosen = self.options(name, width)[(placement or {}).get(name, 0) % len(self.options(name, width))]
                for unit in chosen:
                    kept[order[base + unit * u: base + (unit + 1) * u]] = True
            keep[name] = kept
        return keep

    def random(self, widths: Widths | Mapping[str, int], rng: random.Random) -> Placement:
        mapping = widths.widths if isinstance(widths, Widths) else widths
        return {n: rng.randrange(len(self.options(n, mapping.get(n, f)))) for n, f in self.full.items()}

    def draw(self, widths: Widths | Mapping[str, int], count: int, rng: random.Random) -> list[Placement]:
        """Up to `count` distinct random placements of `widths`."""
        out: list[Placement] = []
        for _ in range(4 * count):
            p = self.random(widths, rng)
            if p not in out:
                out.append(p)
            if len(out) == count:
                break
        return out


def sample_bins(bins: Mapping[str, list[int]], rng: random.Random) -> dict[str, int]:
    return {g: rng.choice(ws) for g, ws in bins.items()}


def min_loss_keep(supernet: Supernet, model: nn.Module, keeps: list[Keep], inputs: torch.Tensor,
                  target: torch.Tensor) -> Keep:
    """The channel set whose sub-network's distillation loss against `target` is lowest (no gradients)."""
    if len(keeps) == 1:
        return keeps[0]
    losses = []
    with torch.no_grad():
        for keep in keeps:
            with supernet.active(keep=keep):
                losses.append(float(distillation_loss(logits_of(model(inputs)), target, temperature=1.0)))
    return keeps[min(range(len(keeps)), key=losses.__getitem__)]


def minmin_step(supernet: Supernet, sharing: LocalFreeSharing, bins: Mapping[str, list[int]], n: int = 4,
                placements: int = 2, seed: int = 0) -> StepFn:
    """A `TrainLoop` step: full network on labels; narrowest and n − 2 binned widths, each at its min-loss placement."""
    smallest = {g: ws[0] for g, ws in bins.items()}

    def step(model: nn.Module, batch, state: LoopState) -> dict[str, float] | None:
        inputs, labels = unpack(batch, model_device(model))
        if inputs.shape[0] < 2:
            return None
        rng = random.Random(seed * 1_000_003 + state.step)
        with supernet.active(None):
            logits = logits_of(model(inputs))
            loss = F.cross_entropy(logits, labels)
            loss.backward()
        target, losses = logits.detach(), [float(loss.detach())]
        for widths in [smallest] + [sample_bins(bins, rng) for _ in range(n - 2)]:
            keeps = [sharing.keep(widths, p) for p in sharing.draw(widths, placements, rng)]
            keep = min_loss_keep(supernet, model, keeps, inputs, target)
            with supernet.active(keep=keep):
                loss = distillation_loss(logits_of(model(inputs)), target, temperature=1.0)
                loss.backward()
            losses.append(float(loss.detach()))
        return {"loss": losses[0], "loss_smallest": losses[1]}
    return step


class CafeNetWeights:
    """A locally-free supernet with its bins: scores widths at their best placement, extracts exactly those channels."""

    score_kind = "CafeNet supernet accuracy (best local placement) after BatchNorm recalibration on the search split"

    def __init__(self, supernet: Supernet, sharing: LocalFreeSharing, bins: dict[str, list[int]], placements: int = 2,
                 training: dict | None = None):
        self.supernet, self.sharing, self.bins, self.placements = supernet, sharing, bins, placements
        self.training = training or {}
        self.chosen: dict[Widths, Keep] = {}

    def choose(self, widths: Widths, batch) -> Keep:
        """The placement of `widths` with the lowest cross-entropy on `batch` (batch statistics), cached."""
        if widths in self.chosen:
            return self.chosen[widths]
        rng = random.Random(zlib.crc32(repr(sorted(widths.widths.items())).encode()))
        options = self.sharing.draw(widths, self.placements, rng)
        keeps = [self.sharing.keep(widths, p) for p in options]
        if len(keeps) > 1:
            inputs, labels = unpack(batch, model_device(self.supernet))
            losses = []
            with preserved_buffers(self.supernet.model), torch.no_grad():
                self.supernet.train()
                for keep in keeps:
                    with self.supernet.active(keep=keep):
                        losses.append(float(F.cross_entropy(logits_of(self.supernet(inputs)), labels)))
                self.supernet.eval()
            keeps = [keeps[min(range(len(losses)), key=losses.__getitem__)]]
        self.chosen[widths] = keeps[0]
        return keeps[0]

    def scorer(self, calibration: list, held_out: list) -> Callable[[Widths], float]:
        shard = held_out[dist.rank()::dist.world_size()]

        def score(widths: Widths) -> float:
            keep = self.choose(widths, calibration[0])
            with preserved_buffers(self.supernet.model), self.supernet.active(keep=keep):
                recalibrate_batchnorm(self.supernet, calibration, max_batches=None)
                correct, total = dist.all_sum(list(count_correct(self.supernet, shard)))
            if total == 0:
                raise SlimdeployError("no held-out samples to score candidates on")
            return correct / total
        return score

    def extract(self, widths: Widths, calibration=None) -> nn.Module:
        """The physically pruned model keeping exactly the chosen placement's channels."""
        if widths not in self.chosen and calibration is None:
            raise SlimdeployError("extracting widths never scored needs calibration batches to choose a placement")
        keep = self.choose(widths, calibration[0]) if calibration is not None else self.chosen[widths]
        return self.supernet.extract(keep=keep, calibration=calibration)

    def summary(self) -> dict:
        return {**self.supernet.summary(), "method": "cafenet", "zone": self.sharing.zone,
                "placements": self.placements, "bins": {g: len(ws) for g, ws in self.bins.items()},
                "training": {k: v for k, v in self.training.items() if k != "history"}}
