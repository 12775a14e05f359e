"""timm's ResNeSt: split attention (SplitAttn) as one layer.

SplitAttn reshapes its convolution's output into (radix, channels) and mixes the radix branches
with attention weights laid out (cardinality, radix, channels); traced through, torch-pruning
maps those reshapes wrongly and the trial prune breaks. As one layer, its input width (the
bottleneck width, a multiple of the convolution's groups) and its output width (a multiple of
the cardinality) can both be pruned; the attention's own reduction width stays.
"""
from __future__ import annotations

import torch.nn as nn

from . import slicing
from .base import LayerRule, layer_rule


@layer_rule("timm.layers.split_attn.SplitAttn")
class SplitAttentionRule(LayerRule):
    def get_in_channels(self, layer):
        return layer.conv.in_channels

    def get_out_channels(self, layer):
        return layer.conv.out_channels // layer.radix

    def divisor(self, layer, out):
        return layer.rsoftmax.cardinality if out else layer.conv.groups

    def prune_in_channels(self, layer, idxs):
        conv = layer.conv
        per = conv.in_channels // conv.groups
        gone = {i % per for i in idxs}
        if len(idxs) != len(gone) * conv.groups:
            raise ValueError("SplitAttn input channels must lose the same positions in every convolution group")
        positions = [p for p in range(per) if p not in gone]
        slicing.grouped_in(conv, positions)
        return layer

    def prune_out_channels(self, layer, idxs):
        radix, card = layer.radix, layer.rsoftmax.cardinality
        width = self.get_out_channels(layer)
        per = width // card
        gone = {i % per for i in idxs}
        if len(idxs) != len(gone) * card:
            raise ValueError("SplitAttn output channels must lose the same positions in every cardinal group")
        positions = [p for p in range(per) if p not in gone]
        keep = [k * per + p for k in range(card) for p in positions]
        rows = [r * width + c for r in range(radix) for c in keep]  # conv output laid out (radix, channels)
        slicing.conv_out(layer.conv, rows)
        if isinstance(layer.bn0, nn.modules.batchnorm._BatchNorm):
            slicing.norm(layer.bn0, rows)
        slicing.grouped_in(layer.fc1, positions)  # its input is laid out (cardinality, per) by its groups
        # attention logits laid out (cardinality, radix, per)
        slicing.conv_out(layer.fc2, [(k * radix + r) * per + p for k in range(card) for r in range(radix)
                                     for p in positions])
        return layer
