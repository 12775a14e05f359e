"""timm attention modules as single layers: their input and output widths (the residual stream)
are pruned, their inner widths and heads stay.

Traced through, torch-pruning offers each attention's inner width (q, k, v rows and the
projection's input), but these modules reshape with stored head and key widths, so the trial
prune breaks; on a 224 px ViT singling out the breaking groups ran past the 60 s bound. As one
layer, the input is the columns of every linear layer that reads it and the output the rows (and
BatchNorm, for LeViT's LinearNorm) of the projection.
"""
from __future__ import annotations

import torch.nn as nn

from . import slicing
from .base import LayerRule, layer_rule


class StreamEnds(LayerRule):
    """A module that reads its input with linear layers `readers` and writes its output with `writer`
    (plus an optional BatchNorm `writer_norm`); everything between keeps its width."""

    def __init__(self, readers: tuple[str, ...], writer: str, writer_norm: str | None = None):
        super().__init__()
        self.readers, self.writer, self.writer_norm = readers, writer, writer_norm

    def _readers(self, layer: nn.Module) -> list[nn.Linear]:
        return [layer.get_submodule(name) for name in self.readers if _has(layer, name)]

    def get_in_channels(self, layer):
        return self._readers(layer)[0].in_features

    def get_out_channels(self, layer):
        return layer.get_submodule(self.writer).out_features

    def prune_in_channels(self, layer, idxs):
        keep = slicing.keep_except(self.get_in_channels(layer), idxs)
        for reader in self._readers(layer):
            slicing.linear_in(reader, keep)
        return layer

    def prune_out_channels(self, layer, idxs):
        keep = slicing.keep_except(self.get_out_channels(layer), idxs)
        slicing.linear_out(layer.get_submodule(self.writer), keep)
        if self.writer_norm:
            slicing.norm(layer.get_submodule(self.writer_norm), keep)
        return layer


def _has(layer: nn.Module, name: str) -> bool:
    """Whether `name` is a submodule (timm's Attention holds `gate = None` unless gated)."""
    try:
        layer.get_submodule(name)
        return True
    except AttributeError:
        return False


layer_rule("timm.layers.attention.Attention")(StreamEnds(("qkv", "gate"), "proj"))
layer_rule("timm.models.efficientformer.Attention")(StreamEnds(("qkv",), "proj"))
layer_rule("timm.models.levit.Attention")(StreamEnds(("qkv.linear",), "proj.ln.linear", "proj.ln.bn"))
layer_rule("timm.models.levit.AttentionDownsample")(
    StreamEnds(("kv.linear", "q.ln.linear"), "proj.ln.linear", "proj.ln.bn"))
layer_rule("timm.models.swin_transformer.WindowAttention")(StreamEnds(("qkv",), "proj"))
