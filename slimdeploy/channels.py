"""Where each channel group's channels live in a model's parameters: the `ChannelMap`.

Built once from the torch-pruning groups behind an `Analysis`. For every group it lists the
parameter slices that pruning one of the group's channels removes: a conv's output rows and the
next layer's input columns, BatchNorm entries, concatenation offsets, a flattened classifier's
column blocks, attention projections. Each slice position carries the group channel it belongs
to, so any set of kept channels becomes a 0/1 vector per (parameter, dimension).

The supernet multiplies parameters by these vectors to run a sub-network on shared weights, and
the cost model counts them to get the MACs and parameters of any widths without pruning a copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning.pruner import function as tpf

from .analysis import Analysis, build_graph, iter_groups
from .errors import SlimdeployError

Vectors = dict[tuple[str, int], torch.Tensor]  # (parameter name, dim) -> 1/0 (float) per position


@dataclass
class Slot:
    """Positions along one dimension of one parameter, each owned by one channel of the group."""

    param: str
    dim: int
    positions: torch.Tensor  # long
    channels: torch.Tensor   # long, the group channel each position belongs to

    def per_channel(self, width: int) -> torch.Tensor:
        """How many of this slot's positions each group channel owns (float, length `width`)."""
        if getattr(self, "_per_channel", None) is None:
            self._per_channel = torch.bincount(self.channels, minlength=width).double()
        return self._per_channel


@dataclass
class GroupChannels:
    """One group's slots, plus the layers whose computation depends on how many channels it keeps."""

    name: str
    width: int
    divisor: int
    slots: list[Slot] = field(default_factory=list)
    norms: list[Slot] = field(default_factory=list)     # LayerNorms normalizing over these channels (param=path)
    attention: list[str] = field(default_factory=list)  # MultiheadAttentions embedding these channels
    inexact: list[str] = field(default_factory=list)    # layers where masking differs from pruning


class ChannelMap:
    """Every group's parameter slices in one model (the model the analysis was made on)."""

    def __init__(self, groups: dict[str, GroupChannels], shapes: dict[str, tuple[int, ...]]):
        self.groups = groups
        self.shapes = shapes

    @classmethod
    def build(cls, model: nn.Module, analysis: Analysis) -> "ChannelMap":
        """Trace each analysed scope of `model` (its scopes must be modules of `model`)."""
        wanted = {g.name: g for g in analysis.space}
        paths = {m: name for name, m in model.named_modules()}
        groups: dict[str, GroupChannels] = {}
        for scope in analysis.scopes:
            if scope.module not in paths:
                raise SlimdeployError("the analysis was made on another model object; analyse this model first")
            graph = build_graph(scope.module, scope.inputs)
            for item in iter_groups(graph, scope.path, []):
                info = wanted.get(item.info.name)
                if info is None:
                    continue
                entry = GroupChannels(info.name, info.width, info.divisor)
                for group_item in item.tp_group:
                    _add_slots(entry, group_item, graph, scope.path)
                entry.slots = _merged(entry.slots)
                groups[info.name] = entry
        missing = sorted(set(wanted) - set(groups))
        if missing:
            raise SlimdeployError(f"channel group(s) {', '.join(missing[:5])} were not found when tracing the model")
        shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
        return cls(groups, shapes)

    def params(self) -> list[str]:
        """Names of every parameter some group's channels live in."""
        return sorted({s.param for g in self.groups.values() for s in g.slots})

    def vectors(self, keep: Mapping[str, torch.Tensor]) -> Vectors:
        """1/0 per position of every sliced (parameter, dim) for `keep` (group → bool per channel).

        Groups left out of `keep` keep every channel.
        """
        out: Vectors = {}
        for name, entry in self.groups.items():
            kept = keep.get(name)
            if kept is None:
                continue
            for slot in entry.slots:
                key = (slot.param, slot.dim)
                if key not in out:
                    out[key] = torch.ones(self.shapes[slot.param][slot.dim])
                out[key][slot.positions] = kept[slot.channels].float()
        return out

    def kept_sizes(self, keep: Mapping[str, torch.Tensor]) -> dict[tuple[str, int], int]:
        """How many entries of every sliced (parameter, dim) `keep` leaves (cheaper than `vectors`)."""
        dropped: dict[tuple[str, int], float] = {}
        for name, entry in self.groups.items():
            kept = keep.get(name)
            if kept is None:
                continue
            lost = (~kept).double()
            for slot in entry.slots:
                key = (slot.param, slot.dim)
                dropped[key] = dropped.get(key, 0.0) + float(lost @ slot.per_channel(entry.width))
        return {key: self.shapes[key[0]][key[1]] - round(n) for key, n in dropped.items()}

    def masks(self, keep: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A multiplicative mask per sliced parameter, broadcastable to its shape."""
        return self.masks_from(self.vectors(keep))

    def masks_from(self, vectors: Vectors) -> dict[str, torch.Tensor]:
        """Per-parameter masks from per-(parameter, dim) vectors (the product over its dims)."""
        per_param: dict[str, torch.Tensor] = {}
        for (param, dim), vector in vectors.items():
            shape = [1] * len(self.shapes[param])
            shape[dim] = -1
            view = vector.view(shape)
            per_param[param] = view if param not in per_param else per_param[param] * view
        return per_param

    def prefix_keep(self, widths: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """Keep sets holding the first `width` channels of each group (block-aligned for divisors)."""
        keep = {}
        for name, entry in self.groups.items():
            width = widths.get(name, entry.width)
            block = entry.width // entry.divisor
            kept = torch.zeros(entry.width, dtype=torch.bool)
            kept.view(entry.divisor, block)[:, : width // entry.divisor] = True
            keep[name] = kept
        return keep

    def notes(self) -> list[str]:
        """Where masking a channel is not the same as removing it."""
        return [f"group {e.name}: {layer}" for e in self.groups.values() for layer in e.inexact]


def _add_slots(entry: GroupChannels, item, graph: tp.DependencyGraph, prefix: str) -> None:
    dep, idxs = item.dep, list(item.idxs)
    roots = getattr(item, "root_idxs", None)
    if not idxs:
        return
    if roots is None or any(r is None for r in roots):
        raise SlimdeployError(f"group {entry.name}: torch-pruning gave no channel mapping for "
                              f"{type(dep.target.module).__name__}; the supernet cannot mask it")
    target, pruner = dep.target.module, getattr(dep.handler, "__self__", None)
    out = graph.is_out_channel_pruning_fn(dep.handler)
    if isinstance(target, nn.Parameter):
        name = _join(prefix, graph._param_to_name[target])
        dim = pruner.pruning_dim % target.ndim
        entry.slots.append(_slot(name, dim, idxs, roots))
        return
    if not list(target.parameters(recurse=True)):
        return  # an op without weights (add, concat, reshape, activation)
    path = _join(prefix, graph._module2name[target])
    add = lambda param, dim, positions=idxs, channels=roots: entry.slots.append(  # noqa: E731
        _slot(f"{path}.{param}", dim, positions, channels))
    if isinstance(pruner, tpf.DepthwiseConvPruner):
        add("weight", 0)
        if target.bias is not None:
            add("bias", 0)
    elif isinstance(pruner, tpf.ConvPruner):
        if out:
            add("weight", 1 if target.transposed else 0)
            if target.bias is not None:
                add("bias", 0)
        elif target.groups > 1 and not target.transposed:
            # A grouped conv's weight holds in_channels/groups inputs; every group drops the same ones.
            per_group = target.in_channels // target.groups
            first = [(i, r) for i, r in zip(idxs, roots) if i < per_group]
            add("weight", 1, [i for i, _ in first], [r for _, r in first])
        else:
            add("weight", 0 if target.transposed else 1)
    elif isinstance(pruner, tpf.LinearPruner):
        add("weight", 0 if out else 1)
        if out and target.bias is not None:
            add("bias", 0)
    elif isinstance(pruner, (tpf.BatchnormPruner, tpf.InstanceNormPruner, tpf.GroupNormPruner)):
        if getattr(target, "weight", None) is not None:
            add("weight", 0)
        if getattr(target, "bias", None) is not None:
            add("bias", 0)
        if isinstance(pruner, tpf.GroupNormPruner):
            entry.inexact.append(f"{path} (GroupNorm statistics span the channels of a group)")
    elif isinstance(pruner, tpf.LayernormPruner):
        if target.weight is not None:
            dim = pruner.pruning_dim % target.weight.ndim
            add("weight", dim)
            if target.bias is not None:
                add("bias", dim)
        entry.norms.append(_slot(path, -1, idxs, roots))
    elif isinstance(pruner, tpf.PReLUPruner):
        if target.num_parameters > 1:
            add("weight", 0)
    elif isinstance(pruner, tpf.EmbeddingPruner):
        add("weight", 1)
    elif isinstance(pruner, tpf.MultiheadAttentionPruner):
        _attention_slots(entry, target, path, idxs, roots)
    else:
        raise SlimdeployError(f"group {entry.name}: the supernet cannot mask {type(target).__name__} at {path} "
                              f"(no channel layout known for it)")


def _attention_slots(entry: GroupChannels, mha: nn.MultiheadAttention, path: str, idxs: list[int],
                     roots: list[int]) -> None:
    """Embedding channels of a MultiheadAttention: q, k and v rows, input columns, output projection."""
    e = mha.embed_dim
    tripled = idxs + [i + e for i in idxs] + [i + 2 * e for i in idxs]
    add = lambda param, dim, positions=idxs, channels=roots: entry.slots.append(  # noqa: E731
        _slot(f"{path}.{param}", dim, positions, channels))
    if mha.in_proj_weight is not None:
        add("in_proj_weight", 0, tripled, roots * 3)
        add("in_proj_weight", 1)
    if mha.in_proj_bias is not None:
        add("in_proj_bias", 0, tripled, roots * 3)
    for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
        if getattr(mha, name, None) is not None:
            add(name, 0)
    for name in ("bias_k", "bias_v"):
        if getattr(mha, name, None) is not None:
            add(name, 2)
    add("out_proj.weight", 0)
    add("out_proj.weight", 1)
    if mha.out_proj.bias is not None:
        add("out_proj.bias", 0)
    entry.attention.append(path)


def _slot(param: str, dim: int, positions: Iterable[int], channels: Iterable[int]) -> Slot:
    return Slot(param, dim, torch.as_tensor(list(positions), dtype=torch.long),
                torch.as_tensor(list(channels), dtype=torch.long))


def _merged(slots: list[Slot]) -> list[Slot]:
    """One slot per (parameter, dim); a position listed twice (a layer reached twice) counts once."""
    merged: dict[tuple[str, int], dict[int, int]] = {}
    for s in slots:
        owners = merged.setdefault((s.param, s.dim), {})
        for p, c in zip(s.positions.tolist(), s.channels.tolist()):
            owners.setdefault(p, c)
    return [_slot(param, dim, owners.keys(), owners.values()) for (param, dim), owners in merged.items()]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name
