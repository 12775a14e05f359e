"""timm's efficient channel attention (ECA, circular ECA) as one channel-wise layer.

ECA gates each channel with a 1-D convolution run *across* the channel axis
(`x.mean((2, 3)).view(B, 1, C)` → conv1d → sigmoid → `x * y`), so torch-pruning maps channels
onto the 1-D convolution's length and couples them wrongly (ecaresnet26t lost most of its groups
and analysed for minutes). The gate has no per-channel weights: as one layer whose input and
output channels go together, pruning changes nothing inside it.
"""
from __future__ import annotations

from .base import LayerRule, layer_rule


@layer_rule("timm.layers.eca.EcaModule", "timm.layers.eca.CecaModule")
class ChannelGate(LayerRule):
    def prune_out_channels(self, layer, idxs):
        return layer

    prune_in_channels = prune_out_channels  # input and output channels are one: torch-pruning couples them

    def get_out_channels(self, layer):
        return None

    def get_in_channels(self, layer):
        return None
