"""MACs and parameter counts of any widths, computed from the widths, not from a pruned copy.

One forward pass records, per conv/linear layer, how many output positions each weight element
is applied at (and the sequence lengths of every attention layer). With the `ChannelMap`
telling how many entries of each parameter dimension a set of widths keeps, the counts follow
by arithmetic: the same numbers `inspection.count_macs_params` gives for the pruned model,
in microseconds instead of a pruning per candidate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn as nn

from .channels import ChannelMap
from .space import Widths


@dataclass(frozen=True)
class _Layer:
    weight: str
    uses: int  # output positions each weight element is multiplied at (batch × spatial or tokens)
    kind: str = "conv"  # conv, conv1x1, grouped, depthwise, linear: kernels that run at different speeds


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if module.groups > 1:
        return "depthwise" if module.groups == module.in_channels else "grouped"
    return "conv1x1" if all(k == 1 for k in module.kernel_size) else "conv"


@dataclass(frozen=True)
class _Attention:
    weight: str  # in_proj_weight (its dim 1 is the embedding)
    embed: int
    batch: int
    lq: int
    lk: int


class CostModel:
    """widths → (MACs, params) for one model and example input, exactly as counted after pruning."""

    def __init__(self, channel_map: ChannelMap, layers: list[_Layer], attention: list[_Attention]):
        self.channel_map = channel_map
        self.layers = layers
        self.attention = attention

    @classmethod
    def build(cls, model: nn.Module, example_input: torch.Tensor, channel_map: ChannelMap) -> "CostModel":
        names = {m: n for n, m in model.named_modules()}
        layers: list[_Layer] = []
        attention: list[_Attention] = []

        def conv_or_linear(module, args, output):
            outputs = module.out_channels if isinstance(module, nn.modules.conv._ConvNd) else module.out_features
            layers.append(_Layer(f"{names[module]}.weight", output.numel() // outputs, _kind(module)))

        def mha(module, args, output):
            q, k = args[0], args[1]
            dim = -2 if module.batch_first else 0
            lq, lk = q.shape[dim], k.shape[dim]
            attention.append(_Attention(f"{names[module]}.in_proj_weight", module.embed_dim,
                                        q.numel() // (lq * module.embed_dim), lq, lk))

        hooks = []
        for m in model.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                hooks.append(m.register_forward_hook(conv_or_linear))
            elif isinstance(m, nn.Linear) and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear):
                hooks.append(m.register_forward_hook(conv_or_linear))
            elif isinstance(m, nn.MultiheadAttention):
                hooks.append(m.register_forward_hook(mha))
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(example_input)
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()
        return cls(channel_map, layers, attention)

    def counts(self, widths: Widths | Mapping[str, int]) -> tuple[int, int]:
        """(MACs, params) of the model pruned to `widths`."""
        mapping = widths.widths if isinstance(widths, Widths) else widths
        return self.counts_for(self.channel_map.prefix_keep(mapping))

    def counts_for(self, keep: Mapping[str, torch.Tensor]) -> tuple[int, int]:
        """(MACs, params) when each group keeps the channels flagged in `keep`."""
        kept = self.channel_map.kept_sizes(keep)
        shapes = self.channel_map.shapes

        def size(param: str) -> int:
            return math.prod(kept.get((param, d), n) for d, n in enumerate(shapes[param]))

        macs = sum(size(layer.weight) * layer.uses for layer in self.layers)
        for a in self.attention:
            e = kept.get((a.weight, 1), a.embed)
            macs += a.batch * (2 * a.lq * e * e + 2 * a.lk * e * e + 2 * a.lq * a.lk * e)
        return int(macs), sum(size(p) for p in shapes)

    def macs_polynomials(self, check: list[Mapping[str, int]]) -> dict[str, list] | None:
        """MACs per layer kind as polynomials in the group widths: kind → [[group names], coefficient]
        terms (a product of the named widths times the coefficient; [] is the constant).

        Every sliced dimension keeps a linear function of the widths, so a layer's MACs are a
        product of such functions. A latency model without node times uses these (`latency.predictor`)
        and needs no torch to evaluate them. None when a group owns positions unevenly (the
        functions are then not linear) or when the polynomials miss `counts` at a `check` width."""
        kept = self._kept_forms()
        if kept is None:
            return None
        shapes = self.channel_map.shapes
        polys: dict[str, dict[tuple[str, ...], float]] = {}
        for layer in self.layers:
            poly = {(): float(layer.uses)}
            for d, n in enumerate(shapes[layer.weight]):
                poly = _times(poly, kept.get((layer.weight, d), {(): float(n)}))
            polys[layer.kind] = _plus(polys.get(layer.kind, {}), poly)
        for a in self.attention:
            e = kept.get((a.weight, 1), {(): float(a.embed)})
            square = _times(e, e)
            poly = _plus(_times(square, {(): 2.0 * a.batch * (a.lq + a.lk)}), _times(e, {(): 2.0 * a.batch * a.lq * a.lk}))
            polys["attention"] = _plus(polys.get("attention", {}), poly)
        full = {name: entry.width for name, entry in self.channel_map.groups.items()}
        for widths in check:
            total = sum(_value(p, {**full, **widths}) for p in polys.values())
            if abs(total - self.counts(widths)[0]) > 1e-6 * max(total, 1.0):
                return None
        return {kind: [[list(names), c] for names, c in p.items() if c] for kind, p in polys.items()}

    def _kept_forms(self) -> dict[tuple[str, int], dict[tuple[str, ...], float]] | None:
        """Per sliced (parameter, dim): the entries kept, as a linear polynomial in the group widths."""
        forms: dict[tuple[str, int], dict[tuple[str, ...], float]] = {}
        for name, entry in self.channel_map.groups.items():
            for slot in entry.slots:
                # prefix_keep keeps the first width/divisor channels of each block: linear when every
                # position within a block owns as many entries, summed over the blocks
                column = slot.per_channel(entry.width).view(entry.divisor, -1).sum(0)
                if not bool((column == column[0]).all()):
                    return None
                slope = float(column[0]) / entry.divisor
                key = (slot.param, slot.dim)
                form = forms.setdefault(key, {(): float(self.channel_map.shapes[key[0]][key[1]])})
                form[()] -= slope * entry.width
                form[(name,)] = form.get((name,), 0.0) + slope
        return forms


def _times(a: dict[tuple[str, ...], float], b: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for ka, va in a.items():
        for kb, vb in b.items():
            key = tuple(sorted(ka + kb))
            out[key] = out.get(key, 0.0) + va * vb
    return out


def _plus(a: dict[tuple[str, ...], float], b: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], float]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + v
    return out


def _value(poly: dict[tuple[str, ...], float], widths: Mapping[str, int]) -> float:
    return sum(c * math.prod(widths[g] for g in names) for names, c in poly.items())
