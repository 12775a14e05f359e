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
            layers.append(_Layer(f"{names[module]}.weight", output.numel() // outputs))

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
