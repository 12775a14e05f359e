"""torchvision's ShuffleNetV2: stage widths through the channel split and shuffle.

A stride-1 block splits its input in halves, passes the first half through, transforms the
second (branch2) and interleaves the two (channel shuffle, 2 groups); a stage's first block
interleaves its two branches. So every channel a branch produces travels a fixed route: it is
consumed by branch2 of a later block of the stage, at a fixed column, or leaves the stage.
torch-pruning divides by zero on the shuffle; here each block is one layer for torch-pruning
(its branches are analysed separately for their inner widths) and each stage's width is a
group this module prunes itself:

1. route every produced channel through the full stage and through the stage at the new width;
2. for every producer and route, keep that many of its most important channels of the same
   route (where the narrower stage has more channels on a route than the full one had, the
   most important remaining channels fill in);
3. select the producers' output channels in that order, and every consumer's input columns to
   match; a kept channel that reaches a consumer it did not feed before gets a zero weight there.

The group is named after the stage's first branch1 1x1 convolution; its width is that layer's
output (half the stage's channels).
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn as nn

from . import slicing
from .base import LayerRule, Structure, layer_rule, output_scores, structure
from ..space import ChannelGroup

BLOCK = "torchvision.models.shufflenetv2.InvertedResidual"
STAGES = ("stage2", "stage3", "stage4")


def _stride2(block: nn.Module) -> bool:
    return len(block.branch1) > 0


def _half(block: nn.Module) -> int:
    return block.branch2[5].out_channels


@layer_rule(BLOCK)
class BlockRule(LayerRule):
    """A block as one layer: a stage's first block can lose input channels; the rest is the stage's."""

    analyse_children = True

    def get_in_channels(self, block):
        return block.branch1[0].in_channels if _stride2(block) else 2 * _half(block)

    def get_out_channels(self, block):
        return 2 * _half(block)

    def owned(self, block, out):
        return out or not _stride2(block)

    def prune_in_channels(self, block, idxs):
        _select_input(block, slicing.keep_except(self.get_in_channels(block), idxs))
        return block

    def prune_out_channels(self, block, idxs):
        raise RuntimeError("ShuffleNetV2 block outputs are pruned by the stage structure")


def _select_input(block: nn.Module, index) -> None:
    """Keep the input channels `index` (None: a new zero channel) of a stage's first block."""
    slicing.depthwise(block.branch1[0], index)
    slicing.norm(block.branch1[1], index)
    slicing.conv_in(block.branch1[2], index)
    slicing.conv_in(block.branch2[0], index)


def routes(blocks: int, half: int) -> dict:
    """Where each produced channel goes: {(producer, j): ("in", block, column) or ("out", position)}.

    Producers are "b1" and "b2" (the first block's branches) and k >= 1 (branch2 of block k).
    """
    stream = [ch for j in range(half) for ch in (("b1", j), ("b2", j))]
    dest = {}
    for k in range(1, blocks):
        passed, consumed = stream[:half], stream[half:]
        for column, ch in enumerate(consumed):
            dest[ch] = ("in", k, column)
        stream = [ch for j in range(half) for ch in (passed[j], (k, j))]
    for position, ch in enumerate(stream):
        dest[ch] = ("out", position)
    return dest


def _role(dest: tuple) -> tuple:
    return dest[:2]


def plan(blocks: int, half: int, new_half: int, scores: dict) -> tuple[dict, dict, list]:
    """(producer -> kept channels in new order, block -> consumer columns, stage output columns).

    `scores[producer]` ranks that producer's channels. Columns are original indices, None for a
    channel the consumer did not read before.
    """
    old, new = routes(blocks, half), routes(blocks, new_half)
    choice = {}
    for producer, score in scores.items():
        ranked = sorted(range(half), key=lambda j: -float(score[j]))
        by_role = defaultdict(list)
        for j in ranked:
            by_role[_role(old[(producer, j)])].append(j)
        slots = defaultdict(list)
        for j in range(new_half):
            slots[_role(new[(producer, j)])].append(j)
        used, short = set(), []
        for role, positions in slots.items():
            picked = sorted(by_role[role][:len(positions)])
            used.update(picked)
            choice.update({(producer, p): j for p, j in zip(positions, picked)})
            short += positions[len(picked):]
        spare = [j for j in ranked if j not in used]
        choice.update({(producer, p): j for p, j in zip(short, spare)})
    order = {producer: [choice[(producer, j)] for j in range(new_half)] for producer in scores}
    at = {dest: ch for ch, dest in new.items()}

    def column(dest_new: tuple):
        producer, j = at[dest_new]
        original = old[(producer, choice[(producer, j)])]
        return original[-1] if _role(original) == _role(dest_new) else None

    columns = {k: [column(("in", k, c)) for c in range(new_half)] for k in range(1, blocks)}
    outputs = [column(("out", p)) for p in range(2 * new_half)]
    return order, columns, outputs


class ShuffleStages(Structure):
    """The stage widths of one ShuffleNetV2."""

    def __init__(self, model: nn.Module, path: str, stages: list[str], consumers: list[str]):
        self.path, self.stages, self.consumers = path, stages, consumers
        super().__init__([ChannelGroup(self._name(s), _half(getattr(model, s)[0]), 1, tuple(self._layers(model, s)))
                          for s in stages])

    def _name(self, stage: str) -> str:
        return _join(self.path, f"{stage}.0.branch1.2")

    def _layers(self, model, stage):
        blocks = getattr(model, stage)
        names = [f"{stage}.0.branch1.2", f"{stage}.0.branch1.3"]
        for k in range(len(blocks)):
            names += [f"{stage}.{k}.branch2.5", f"{stage}.{k}.branch2.6"] + ([f"{stage}.{k}.branch2.0"] if k else [])
        return [_join(self.path, n) for n in names]

    @staticmethod
    def _producers(blocks) -> dict:
        """producer -> (branch, its output conv, that conv's BatchNorm)."""
        first = blocks[0]
        found = {"b1": (first.branch1, first.branch1[2], first.branch1[3]),
                 "b2": (first.branch2, first.branch2[5], first.branch2[6])}
        for k in range(1, len(blocks)):
            found[k] = (blocks[k].branch2, blocks[k].branch2[5], blocks[k].branch2[6])
        return found

    def scores(self, model, criterion):
        root = model.get_submodule(self.path) if self.path else model
        out = {}
        for stage in self.stages:
            per = self._producer_scores(root.get_submodule(stage), criterion)
            out[self._name(stage)] = torch.stack([per["b1"], per["b2"]]).mean(0)
        return out

    def _producer_scores(self, blocks, criterion) -> dict:
        scores = {}
        for producer, (branch, conv, _) in self._producers(blocks).items():
            example = torch.zeros(1, branch[0].in_channels, 8, 8)
            scores[producer] = output_scores(criterion, branch, conv, example)
        return scores

    def prune(self, model, widths, criterion):
        root = model.get_submodule(self.path) if self.path else model
        for stage, consumer in zip(self.stages, self.consumers):
            blocks = root.get_submodule(stage)
            half, new_half = _half(blocks[0]), widths.get(self._name(stage), _half(blocks[0]))
            if new_half == half:
                continue
            order, columns, outputs = plan(len(blocks), half, new_half, self._producer_scores(blocks, criterion))
            for producer, (_, conv, bn) in self._producers(blocks).items():
                slicing.conv_out(conv, order[producer])
                slicing.norm(bn, order[producer])
            for k, index in columns.items():
                slicing.conv_in(blocks[k].branch2[0], index)
            target = root.get_submodule(consumer)
            if isinstance(target, nn.Conv2d):
                slicing.conv_in(target, outputs)
            else:
                _select_input(target, outputs)


@structure("torchvision.models.shufflenetv2.ShuffleNetV2")
def _find(model: nn.Module, path: str) -> list[Structure]:
    stages = [s for s in STAGES if isinstance(getattr(model, s, None), nn.Sequential)]
    if not stages or not _regular(model, stages):
        return []
    consumers = [f"{nxt}.0" for nxt in stages[1:]] + ["conv5.0"]
    return [ShuffleStages(model, path, stages, consumers)]


def _regular(model: nn.Module, stages: list[str]) -> bool:
    """Every stage: a stride-2 block, then stride-1 blocks, one half width throughout."""
    for s in stages:
        blocks = getattr(model, s)
        half = _half(blocks[0])
        if not _stride2(blocks[0]) or any(_stride2(b) or _half(b) != half for b in blocks[1:]):
            return False
    return isinstance(getattr(model, "conv5", None), nn.Sequential) and isinstance(model.conv5[0], nn.Conv2d)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
