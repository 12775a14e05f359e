"""timm's Res2Net: the multi-scale split inside Bottle2neck.

The first convolution's output is split into `scale` equal chunks with a stored chunk width
(`torch.split(out, self.width)`). In a stage's first block each chunk feeds its own 3x3
convolution and torch-pruning follows that (the output's width must only stay a multiple of the
scale count times the chunk convolutions' groups: a divisor hint). In the other blocks each
chunk is also added to the previous scale's output (`sp = sp + spx[i]`), which torch-pruning's
split mapping gets wrong (indices past a chunk's end; the pruned copy fails). There this module
prunes two widths itself: the chunk width (the same positions in every chunk and in the scale
convolutions coupled to them through the adds) and the last scale convolution's output width.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import slicing
from .base import Structure, divisor_hint, fixup, output_scores, structure
from ..ranking import channels_to_remove
from ..space import ChannelGroup

BOTTLE2NECK = "timm.models.res2net.Bottle2neck"


@divisor_hint(BOTTLE2NECK)
def _res2net_scales(block: nn.Module) -> dict:
    blocks = block.scale * block.convs[0].groups
    return {block.conv1: blocks, block.bn1: blocks}


@fixup(BOTTLE2NECK)
def _res2net_width(block: nn.Module) -> None:
    block.width = block.conv1.out_channels // block.scale


class ScaleWidths(Structure):
    """The chunk width and the last scale's output width of one non-first Bottle2neck."""

    def __init__(self, block: nn.Module, path: str):
        self.path = path
        self.blocks = block.scale * block.convs[0].groups
        last = len(block.convs) - 1
        chunk_layers = ["conv1", "bn1", "conv3"] + [f"{k}.{i}" for i in range(last) for k in ("convs", "bns")]
        super().__init__([
            ChannelGroup(_join(path, "conv1"), block.conv1.out_channels, self.blocks,
                         tuple(sorted(_join(path, n) for n in chunk_layers + [f"convs.{last}"]))),
            ChannelGroup(_join(path, f"convs.{last}"), block.convs[last].out_channels, block.convs[last].groups,
                         tuple(_join(path, n) for n in (f"convs.{last}", f"bns.{last}", "conv3"))),
        ])

    def owned_sides(self, block):
        owned = {(block.conv1, True), (block.bn1, True), (block.conv3, False)}
        owned |= {(m, side) for m in (*block.convs, *block.bns) for side in (True, False)}
        return owned

    def scores(self, model, criterion):
        block = model.get_submodule(self.path)
        last = len(block.convs) - 1
        return {
            self.groups[0].name: output_scores(criterion, nn.Sequential(block.conv1, block.bn1), block.conv1,
                                               torch.zeros(1, block.conv1.in_channels, 8, 8)),
            self.groups[1].name: output_scores(criterion, nn.Sequential(block.convs[last], block.bns[last]),
                                               block.convs[last], torch.zeros(1, block.convs[last].in_channels, 8, 8)),
        }

    def prune(self, model, widths, criterion):
        block = model.get_submodule(self.path)
        chunk_group, last_group = self.groups
        width, last_width = block.conv1.out_channels, block.convs[-1].out_channels
        keep_chunk = widths.get(chunk_group.name, width)
        keep_last = widths.get(last_group.name, last_width)
        if keep_chunk == width and keep_last == last_width:
            return
        scores = self.scores(model, criterion)
        gone = set(channels_to_remove(scores[chunk_group.name], width, keep_chunk, self.blocks))
        kept = [c for c in range(width) if c not in gone]
        chunk = width // block.scale
        in_chunk = [c for c in kept if c < chunk]  # the same positions in every chunk
        cardinal = block.convs[0].groups
        in_group = [c for c in in_chunk if c < chunk // cardinal]
        last_gone = set(channels_to_remove(scores[last_group.name], last_width, keep_last, last_group.divisor))
        last_kept = [c for c in range(last_width) if c not in last_gone]

        slicing.conv_out(block.conv1, kept)
        slicing.norm(block.bn1, kept)
        for i, (conv, bn) in enumerate(zip(block.convs, block.bns)):
            slicing.grouped_in(conv, in_group)
            rows = in_chunk if i < len(block.convs) - 1 else last_kept
            slicing.conv_out(conv, rows)
            slicing.norm(bn, rows)
        # conv3 reads cat(scale outputs..., last chunk): chunk-width parts except the last scale's
        parts = [in_chunk] * (len(block.convs) - 1) + [last_kept] + [in_chunk] * (block.scale - len(block.convs))
        columns, offset = [], 0
        for i, part in enumerate(parts):
            columns += [offset + c for c in part]
            offset += last_width if i == len(block.convs) - 1 else chunk
        slicing.conv_in(block.conv3, columns)
        block.width = keep_chunk // block.scale


@structure(BOTTLE2NECK)
def _find(block: nn.Module, path: str) -> list[Structure]:
    if block.is_first or block.scale < 2:
        return []
    return [ScaleWidths(block, path)]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
