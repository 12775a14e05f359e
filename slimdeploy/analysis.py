"""Find a model's prunable channel groups with torch-pruning's DependencyGraph, safely.

Each *scope* (the whole model first) is analysed under a memory and time bound and then proven
by a trial: a copy is pruned to about half of every group's width and must still run and give
the same output shapes. A scope that fails (the analysis raises, explodes, or the trial breaks,
as ShuffleNet's channel shuffle, Swin's windows or MaxViT's reshapes do) is replaced by its
children, each analysed alone with its own input and output widths held fixed, so only widths
internal to a child are offered. Groups reaching a scope's output never change, so the
classifier's output and every fixed boundary stay as they are.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch_pruning as tp

from . import adapters
from .errors import SlimdeployError
from .guard import DEFAULT_MEMORY_GB, DEFAULT_SECONDS, LimitExceeded, bounded
from .space import ChannelGroup, WidthSpace

ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class Scope:
    """A module analysed as a unit, with the positional inputs it was called with."""

    path: str
    module: nn.Module
    inputs: tuple
    groups: list[ChannelGroup] = field(default_factory=list)


@dataclass
class Analysis:
    """The width space of a model and the scopes that produced it."""

    space: WidthSpace
    scopes: list[Scope]
    notes: list[str]


@dataclass
class GraphGroup:
    """One torch-pruning group with its slimdeploy description."""

    info: ChannelGroup
    tp_group: object
    root: nn.Module
    handler: object


def build_graph(module: nn.Module, inputs: tuple) -> tp.DependencyGraph:
    """Trace `module` on `inputs` (positional arguments) into a torch-pruning DependencyGraph."""
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(
            module, example_inputs=inputs, forward_fn=lambda m, x: m(*x), verbose=False)


def iter_groups(graph: tp.DependencyGraph, prefix: str, ignored: Sequence[nn.Module]) -> Iterator[GraphGroup]:
    """Yield the prunable groups of a graph, lazily, so each is computed after earlier pruning.

    Skipped: groups that change the traced module's input or output, that touch an ignored layer,
    or of width 1. A group is named after its earliest layer (in module order) whose output it prunes.
    """
    ignored_ids = {id(m) for m in ignored}
    names = graph._module2name
    param_names = getattr(graph, "_param_to_name", {})
    order = {m: i for i, m in enumerate(graph.model.modules())}
    for group in graph.get_all_groups(ignored_layers=list(ignored), root_module_types=ROOT_TYPES):
        if _touches_boundary(graph, group):
            continue
        targets = [dep.target.module for dep, _ in group]
        if any(id(t) in ignored_ids for t in targets):
            continue
        root = group[0].dep.target.module
        width = len(group[0].idxs)
        if width < 2 or root not in names:
            continue
        layers = set()
        divisor = 1
        for t in targets:
            if isinstance(t, nn.Module) and t in names:
                layers.add(_join(prefix, names[t]))
                divisor = math.lcm(divisor, _channel_divisor(t))
            elif isinstance(t, nn.Parameter) and t in param_names:
                layers.add(_join(prefix, param_names[t]))
        producers = [dep.target.module for dep, _ in group
                     if dep.target.module in order and graph.is_out_channel_pruning_fn(dep.handler)
                     and isinstance(dep.target.module, ROOT_TYPES)]
        first = min(producers, key=order.__getitem__, default=root)
        info = ChannelGroup(_join(prefix, names[first]), width, divisor, tuple(sorted(layers)))
        yield GraphGroup(info, group, root, group[0].dep.handler)


def _touches_boundary(graph: tp.DependencyGraph, group) -> bool:
    """True when pruning the group would change what the traced module takes in or returns.

    Output: the group changes the output of a sink (a node nothing consumes, or torch-pruning's
    output node); pruning only a sink's input channels is fine. Input: the group changes the
    input channels of a layer fed by the scope's input (such as a depthwise conv); sources that
    are weights (class tokens, a Linear's transposed weight) may be pruned.
    """
    for dep, _ in group:
        node = dep.target
        if isinstance(node.module, tp.ops._OutputOp):
            return True
        is_in = graph.is_in_channel_pruning_fn(dep.handler)
        is_out = graph.is_out_channel_pruning_fn(dep.handler)
        if not node.outputs and not (is_in and not is_out):
            return True
        fed_by_input = not node.inputs and isinstance(node.module, nn.Module) and not _is_graph_op(node.module)
        if fed_by_input and not (is_out and not is_in):
            return True
    return False


def prune_group(graph: tp.DependencyGraph, item: GraphGroup, remove: list[int]) -> None:
    """Physically remove the root channels `remove` (and everything coupled to them)."""
    if remove:
        graph.get_pruning_group(item.root, item.handler, remove).prune()


def analyse(model: nn.Module, example_input: torch.Tensor | tuple, ignored: Sequence[str] = (),
            memory_gb: float = DEFAULT_MEMORY_GB, seconds: float = DEFAULT_SECONDS) -> Analysis:
    """Return the model's width space, falling back to smaller scopes where analysis fails."""
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    ignored_modules = _resolve_ignored(model, ignored)
    was_training = model.training
    scopes: list[Scope] = []
    notes: list[str] = []
    try:
        _analyse_scope(Scope("", model, inputs), ignored_modules, scopes, notes, memory_gb, seconds)
    finally:
        model.train(was_training)
    groups = tuple(g for s in scopes for g in s.groups)
    cls = type(model)
    return Analysis(WidthSpace(groups, f"{cls.__module__}.{cls.__qualname__}"), scopes, notes)


@contextlib.contextmanager
def guarded(memory_gb: float = DEFAULT_MEMORY_GB, seconds: float = DEFAULT_SECONDS, what: str = "step"):
    """`bounded`, restoring torch's grad mode afterwards.

    A time limit can interrupt torch-pruning inside a ``no_grad`` region before it restores the
    mode; without this, every later backward pass in the process would fail.
    """
    with torch.set_grad_enabled(torch.is_grad_enabled()), bounded(memory_gb, seconds, what):
        yield


def _analyse_scope(scope: Scope, ignored: list[nn.Module], scopes: list[Scope], notes: list[str],
                   memory_gb: float, seconds: float) -> None:
    what = f"dependency analysis of {scope.path or 'the model'}"
    try:
        with guarded(memory_gb, seconds, what):
            scope.groups = _trial(scope, ignored)
        if scope.groups:
            scopes.append(scope)
        return
    except LimitExceeded as exc:
        reason = str(exc)
    except Exception as exc:  # torch-pruning raises many kinds on constructs it cannot trace
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    children = _children_with_inputs(scope)
    notes.append(f"{scope.path or 'model'}: {reason}; analysed its {len(children)} part(s) separately, "
                 f"keeping their boundary widths")
    for child in children:
        _analyse_scope(child, ignored, scopes, notes, memory_gb, seconds)


def _trial(scope: Scope, ignored: list[nn.Module]) -> list[ChannelGroup]:
    """Analyse a copy of the scope, prune it to about half, and check it still runs alike."""
    with torch.no_grad():
        reference = _output_shapes(scope.module.eval()(*scope.inputs))
    trial = copy.deepcopy(scope.module)
    twin = dict(zip(scope.module.modules(), trial.modules()))
    graph = build_graph(trial, scope.inputs)
    groups = []
    for item in iter_groups(graph, scope.path, [twin[m] for m in ignored if m in twin]):
        g = item.info
        keep = max(g.divisor, (g.width // 2) // g.divisor * g.divisor)
        block = g.width // g.divisor
        drop_per_block = block - keep // g.divisor
        prune_group(graph, item, [b * block + p for b in range(g.divisor) for p in range(drop_per_block)])
        groups.append(g)
    if not groups:
        return []
    adapters.after_prune(trial)
    with torch.no_grad():
        shapes = _output_shapes(trial.eval()(*scope.inputs))
    if shapes != reference:
        raise RuntimeError(f"pruned copy changed the output shapes {reference} -> {shapes}")
    return groups


def _children_with_inputs(scope: Scope) -> list[Scope]:
    """Direct children that hold prunable layers, with the inputs of their first call."""
    candidates = [(name, child) for name, child in scope.module.named_children()
                  if any(isinstance(m, ROOT_TYPES) for m in child.modules())]
    captured: dict[str, tuple] = {}
    hooks = []
    for name, child in candidates:
        def hook(mod, args, name=name):
            if name not in captured and all(isinstance(a, torch.Tensor) for a in args):
                captured[name] = tuple(a.detach().clone() for a in args)
        hooks.append(child.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            scope.module.eval()(*scope.inputs)
    finally:
        for h in hooks:
            h.remove()
    return [Scope(_join(scope.path, name), child, captured[name])
            for name, child in candidates if name in captured]


def _is_graph_op(module: nn.Module) -> bool:
    """torch-pruning's stand-ins for functional ops (add, cat, reshape, transpose of a weight)."""
    return type(module).__module__ == tp.ops.__name__ and type(module).__name__.startswith("_")


def _channel_divisor(module: nn.Module) -> int:
    """How many equal blocks a layer's channels form (conv groups, GroupNorm groups, heads)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        depthwise = module.groups == module.in_channels
        return 1 if depthwise else module.groups
    if isinstance(module, nn.GroupNorm):
        return module.num_groups
    if isinstance(module, nn.MultiheadAttention):
        return module.num_heads
    return 1


def _output_shapes(output) -> list:
    return [tuple(t.shape) for t in tp.utils.flatten_as_list(output) if isinstance(t, torch.Tensor)]


def _resolve_ignored(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise SlimdeployError(f"no layer named {', '.join(missing)} in the model; "
                              f"names are module paths such as {next(iter(list(modules)[1:]), 'fc')!r}")
    return [modules[n] for n in names]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name
