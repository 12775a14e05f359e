"""torchvision's Swin Transformer (V1 and V2) as layers torch-pruning can analyse in seconds.

Tracing through the shifted-window attention (pad, roll, window partition, head split) makes
torch-pruning's index mapping grow without bound (7 GB in 100-190 s). Each attention and each
patch merging is one layer instead:

- window attention: its input channels are the residual stream; `C // num_heads` is the head
  width, so when the stream loses channels the attention's inner width (q, k, v rows and the
  projection's input) loses as many, the same count in every head (the weakest dims by weight
  norm). The stream's width is then a multiple of the head count.
- patch merging: the input is four spatial slices concatenated on channels, so removing stream
  channel i removes i, C+i, 2C+i and 3C+i of the norm (V1) and the reduction's input.

Offered: each stage's stream width and each block's MLP hidden width.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import slicing
from .base import LayerRule, fixup, layer_rule

ATTENTION = ("torchvision.models.swin_transformer.ShiftedWindowAttention",
             "torchvision.models.swin_transformer.ShiftedWindowAttentionV2")
MERGING = ("torchvision.models.swin_transformer.PatchMerging",
           "torchvision.models.swin_transformer.PatchMergingV2",
           "timm.models.swin_transformer.PatchMerging")  # timm: the same four blocks of C, norm first


@layer_rule(*ATTENTION)
class WindowAttentionRule(LayerRule):
    def get_in_channels(self, layer):
        return layer.qkv.in_features

    def get_out_channels(self, layer):
        return layer.proj.out_features

    def divisor(self, layer, out):
        return 1 if out else layer.num_heads

    def prune_out_channels(self, layer, idxs):
        slicing.linear_out(layer.proj, slicing.keep_except(layer.proj.out_features, idxs))
        return layer

    def prune_in_channels(self, layer, idxs):
        slicing.linear_in(layer.qkv, slicing.keep_except(layer.qkv.in_features, idxs))
        _shrink_inner(layer, layer.qkv.in_features)
        return layer


def _shrink_inner(layer: nn.Module, width: int) -> None:
    """Cut the attention's inner width to `width`, dropping the same count of dims in every head."""
    inner = layer.qkv.out_features // 3
    heads = layer.num_heads
    if inner == width:
        return
    if width % heads:
        raise ValueError(f"window attention width {width} is not a multiple of its {heads} heads")
    head_dim, keep_dim = inner // heads, width // heads
    with torch.no_grad():
        w = layer.qkv.weight.view(3, heads, head_dim, -1)
        strength = w.pow(2).sum(dim=(0, 3)) + layer.proj.weight.view(-1, heads, head_dim).pow(2).sum(0)
        kept = strength.argsort(dim=1, descending=True)[:, :keep_dim].sort(dim=1).values
    dims = [h * head_dim + int(d) for h in range(heads) for d in kept[h]]
    slicing.linear_out(layer.qkv, [part * inner + d for part in range(3) for d in dims])
    slicing.linear_in(layer.proj, dims)


@layer_rule(*MERGING)
class PatchMergingRule(LayerRule):
    def get_in_channels(self, layer):
        return layer.reduction.in_features // 4

    def get_out_channels(self, layer):
        return layer.reduction.out_features

    def output_layer(self, layer):
        return "reduction"

    def prune_out_channels(self, layer, idxs):
        keep = slicing.keep_except(layer.reduction.out_features, idxs)
        slicing.linear_out(layer.reduction, keep)
        if _norm_after(layer):
            slicing.norm(layer.norm, keep)
        return layer

    def prune_in_channels(self, layer, idxs):
        width = layer.reduction.in_features // 4
        keep = slicing.keep_except(width, idxs)
        four = [part * width + i for part in range(4) for i in keep]
        slicing.linear_in(layer.reduction, four)
        if not _norm_after(layer):
            slicing.norm(layer.norm, four)
        return layer


def _norm_after(layer: nn.Module) -> bool:
    """V2 normalizes the reduction's output; V1 its four-slice input."""
    return type(layer).__name__ == "PatchMergingV2"


@fixup(*MERGING)
def _merging_dim(layer: nn.Module) -> None:
    layer.dim = layer.reduction.in_features // 4
