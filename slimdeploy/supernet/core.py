"""Shared weights for every width of any model the width space handles.

`Supernet` wraps a copy of the user's trained model. Every group's channels are ranked once by
importance (the OFA reordering, kept as a ranking rather than a physical permutation), so width
k of a group means its k most important channels. A sub-network is activated by **masking**:
inside `with supernet.active(widths):`, each forward pass multiplies every parameter slice that
pruning would remove by zero (`ChannelMap`), through `torch.func.functional_call`, so the
gradients of the shared weights flow through the mask.

Why masking rather than slicing weights: masking works for every layer torch-pruning can prune
(concatenations, flattened classifiers, grouped and depthwise convs, attention, bare
parameters) and for any set of kept channels (CafeNet's free channels), without re-implementing
each layer's forward. Its price is that every sub-network costs a full-width pass
(benchmarks/RESULTS.md measures the step cost of both). Two computations depend on how many
channels are kept, and are made exact: LayerNorm statistics (computed over the kept channels
only) and attention's 1/sqrt(head_dim) (the query rows are rescaled). GroupNorm over pruned
channels is not exact (`notes()` says where).

`extract(widths)` prunes a copy physically to exactly the channels the sub-network used, so it
computes what the supernet computes.
"""
from __future__ import annotations

import contextlib
import copy
import math
import random
from typing import Callable, Iterable, Iterator, Mapping

import torch
import torch.nn as nn

from ..analysis import Analysis, Scope, analyse, build_graph, guarded, iter_groups
from ..channels import ChannelMap
from ..errors import SlimdeployError
from ..importance import KeepChannels, get_importance
from ..prune import prune
from ..space import MIN_WIDTH_FRACTION, Widths, WidthSpace
from ..train.evaluate import count_correct, preserved_buffers, recalibrate_batchnorm
from ..zoo import META

Keep = dict[str, torch.Tensor]  # group name -> bool per channel


class Supernet(nn.Module):
    """A model whose channel groups can be narrowed to any widths without copying or pruning it."""

    score_kind = "supernet accuracy after BatchNorm recalibration on the search split"

    def __init__(self, model: nn.Module, example_input: torch.Tensor, analysis: Analysis | None = None,
                 importance: str = "l2", align: int = 8, min_fraction: float = MIN_WIDTH_FRACTION,
                 order: Mapping[str, list[int]] | None = None):
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        meta = getattr(model, META, None)
        if meta is not None:
            setattr(self.model, META, copy.deepcopy(meta))
        self.example = example_input.detach().clone()
        self.analysis = _twin_analysis(model, self.model, analysis) if analysis else analyse(self.model, self.example)
        self.align, self.min_fraction = align, min_fraction
        self.channels = ChannelMap.build(self.model, self.analysis)
        self.order = ({name: torch.as_tensor(list(o), dtype=torch.long) for name, o in order.items()} if order
                      else channel_order(self.model, self.analysis, importance))
        self._keep: Keep | None = None
        self._masks: dict[str, torch.Tensor] = {}
        self._norms: dict[nn.Module, torch.Tensor] = {}

    # -- which sub-network runs --------------------------------------------------------------
    @property
    def space(self) -> WidthSpace:
        return self.analysis.space

    def keep_for(self, widths: Widths | Mapping[str, int]) -> Keep:
        """The channels each group keeps at `widths`: its `width` most important ones."""
        mapping = widths.widths if isinstance(widths, Widths) else widths
        keep = {}
        for g in self.space:
            kept = torch.zeros(g.width, dtype=torch.bool)
            kept[self.order[g.name][: mapping.get(g.name, g.width)]] = True
            keep[g.name] = kept
        return keep

    @contextlib.contextmanager
    def active(self, widths: Widths | Mapping[str, int] | None = None, keep: Keep | None = None) -> Iterator[None]:
        """Run the sub-network at `widths` (or with explicit `keep` sets) inside the block; None = full."""
        previous = (self._keep, self._masks, self._norms)
        self.set_active(widths, keep)
        try:
            yield
        finally:
            self._keep, self._masks, self._norms = previous

    def set_active(self, widths: Widths | Mapping[str, int] | None = None, keep: Keep | None = None) -> None:
        """Switch the sub-network without a context (training steps); None = the full network."""
        if widths is not None and isinstance(widths, Widths):
            self.space.validate(widths)
        keep = keep if keep is not None else (self.keep_for(widths) if widths is not None else None)
        self._keep = keep
        if keep is None or all(bool(k.all()) for k in keep.values()):
            self._masks, self._norms = {}, {}
            return
        device = next(self.model.parameters()).device
        vectors = self.channels.vectors(keep)
        self._scale_attention(vectors)
        self._masks = {p: m.to(device) for p, m in self.channels.masks_from(vectors).items()}
        modules = dict(self.model.named_modules())
        self._norms = {}
        for name, entry in self.channels.groups.items():
            for slot in entry.norms:
                module = modules[slot.param]
                size = module.normalized_shape[-1]
                vector = self._norms.get(module, torch.ones(size, device=device))
                vector[slot.positions.to(device)] = keep[name][slot.channels].float().to(device)
                self._norms[module] = vector

    def _scale_attention(self, vectors) -> None:
        """Queries scaled by sqrt(head_dim / kept head_dim): pruned attention divides by its own head size."""
        for entry in self.channels.groups.values():
            for path in entry.attention:
                key = (f"{path}.in_proj_weight", 1)
                if key not in vectors:
                    continue
                embed = vectors[key].numel()
                kept = float(vectors[key].sum())
                if 0 < kept < embed:
                    factor = math.sqrt(embed / kept)
                    for name in (f"{path}.in_proj_weight", f"{path}.in_proj_bias"):
                        rows = vectors.get((name, 0))
                        if rows is not None:
                            rows[:embed] *= factor

    def forward(self, *inputs):
        if not self._masks:
            return self.model(*inputs)
        params = dict(self.model.named_parameters())
        masked = {name: params[name] * mask for name, mask in self._masks.items()}
        hooks = [m.register_forward_hook(_masked_layer_norm(v)) for m, v in self._norms.items()]
        try:
            return torch.func.functional_call(self.model, masked, inputs, strict=False)
        finally:
            for h in hooks:
                h.remove()

    # -- widths a sandwich step samples --------------------------------------------------------
    def choices(self, name: str) -> list[int]:
        return self.space.group(name).choices(self.align, self.min_fraction)

    def largest(self) -> Widths:
        return self.space.full()

    def smallest(self) -> Widths:
        return self.space.smallest(self.align, self.min_fraction)

    def random_widths(self, rng: random.Random) -> Widths:
        return self.space.random(rng, self.align, self.min_fraction)

    # -- evaluation and extraction -------------------------------------------------------------
    def recalibrate(self, batches: Iterable, max_batches: int | None = None) -> int:
        """Re-estimate BatchNorm statistics in place for the active sub-network (all-reduced under DDP)."""
        from ..train.distributed import average_batchnorm_stats

        used = recalibrate_batchnorm(self, batches, max_batches=max_batches)
        average_batchnorm_stats(self.model)
        return used

    def scorer(self, calibration: list, held_out: list) -> Callable[[Widths], float]:
        """widths → accuracy on `held_out` after recalibrating on `calibration` (model buffers restored).

        Under torchrun each process scores its share of the held-out batches and the counts are
        summed, so every rank gets the same score.
        """
        from ..train import distributed as dist

        shard = held_out[dist.rank()::dist.world_size()]

        def score(widths: Widths) -> float:
            with preserved_buffers(self.model), self.active(widths):
                recalibrate_batchnorm(self, calibration, max_batches=None)
                correct, total = dist.all_sum(list(count_correct(self, shard)))
            if total == 0:
                raise SlimdeployError("no held-out samples to score candidates on")
            return correct / total
        return score

    def extract(self, widths: Widths | Mapping[str, int] | None = None, keep: Keep | None = None,
                calibration: Iterable | None = None) -> nn.Module:
        """A physically pruned copy computing what the supernet computes at `widths` (or `keep`).

        With `calibration` batches, BatchNorm statistics are first re-estimated for this
        sub-network; otherwise the model's current statistics are used.
        """
        if widths is None and keep is None:
            raise SlimdeployError("extract needs widths or keep sets")
        keep = keep if keep is not None else self.keep_for(widths)
        counts = {name: int(k.sum()) for name, k in keep.items()}
        target = Widths(self.space.fingerprint, counts)
        with preserved_buffers(self.model):
            if calibration is not None:
                with self.active(keep=keep):
                    self.recalibrate(calibration)
            indices = {name: torch.nonzero(k).flatten() for name, k in keep.items()}
            pruned = prune(self.model, target, self.example, importance=KeepChannels(indices),
                           analysis=self.analysis)
        return pruned.eval()

    def notes(self) -> list[str]:
        return self.channels.notes()

    def summary(self) -> dict:
        return {"groups": len(self.space), "align": self.align, "min_fraction": self.min_fraction,
                "masking": "parameter masks through functional_call", "notes": self.notes()}


def channel_order(model: nn.Module, analysis: Analysis, importance: str = "l2") -> dict[str, torch.Tensor]:
    """Per group, its channels from most to least important; for a divisor, block positions ranked together.

    With a divisor d (conv groups, heads) the channels form d equal blocks and a width keeps the
    same positions in every block, ranked by their mean score across blocks, as pruning does.
    """
    criterion = get_importance(importance)
    if criterion.needs_gradients:
        raise SlimdeployError(f"importance {importance!r} needs gradients; order a supernet by l2, l1 or bn")
    groups = {g.name: g for g in analysis.space}
    order = {}
    for scope in analysis.scopes:
        with guarded(what=f"scoring {scope.path or 'the model'}"):
            graph = build_graph(scope.module, scope.inputs)
            for item in iter_groups(graph, scope.path, []):
                g = groups.get(item.info.name)
                if g is None:
                    continue
                scores = criterion.score_group(item).detach().float().flatten().cpu()
                block = g.width // g.divisor
                ranked = torch.argsort(scores.view(g.divisor, block).mean(0), descending=True, stable=True)
                order[g.name] = (torch.arange(g.divisor).view(1, -1) * block + ranked.view(-1, 1)).flatten()
    return order


def _twin_analysis(source: nn.Module, copy_: nn.Module, analysis: Analysis) -> Analysis:
    """The same analysis with its scopes pointing at the copy's modules."""
    twin = dict(zip(source.modules(), copy_.modules()))
    scopes = [Scope(s.path, twin[s.module], s.inputs, list(s.groups)) for s in analysis.scopes]
    return Analysis(analysis.space, scopes, list(analysis.notes))


def _masked_layer_norm(vector: torch.Tensor):
    """A forward hook recomputing a LayerNorm over the kept channels only (masked ones give 0)."""
    def hook(module: nn.LayerNorm, args, output):
        x = args[0]
        channels_last = x.shape[-1] == vector.numel() and not type(module).__name__.endswith("2d")
        dim = -1 if channels_last else 1
        shape = [1] * x.ndim
        shape[dim] = -1
        m = vector.view(shape).to(x.dtype)
        n = m.sum()
        mean = (x * m).sum(dim, keepdim=True) / n
        var = (((x - mean) * m) ** 2).sum(dim, keepdim=True) / n
        y = (x - mean) / torch.sqrt(var + module.eps)
        if module.weight is not None:
            y = y * module.weight.view(shape)
        if module.bias is not None:
            y = y + module.bias.view(shape)
        return y * m
    return hook


__all__ = ["Supernet", "channel_order"]
