"""Find a model's prunable channel groups with torch-pruning's DependencyGraph, safely.

Each *scope* (the whole model first) is analysed under a memory and time bound and then proven
by a trial: a copy is pruned to about half of every group's width and must still run and give
the same output shapes. A scope that fails (the analysis raises, explodes, or the trial breaks,
as MaxViT's reshapes do) is replaced by its children, each analysed alone with its own input
and output widths held fixed, so only widths internal to a child are offered. Groups reaching a
scope's output never change, so the classifier's output and every fixed boundary stay as they are.

Architecture adapters (`slimdeploy.adapters`) add what tracing cannot see: modules traced as one
layer (Swin's window attention; ShuffleNetV2's blocks, whose branches are then analysed as scopes
of their own) and structures whose groups the adapter prunes itself (ShuffleNetV2's stage widths).
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
from .importance import FirstChannels
from .modes import evaluating
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
    """The width space of a model, the scopes and the adapter structures that produced it."""

    space: WidthSpace
    scopes: list[Scope]
    notes: list[str]
    structures: list[adapters.Structure] = field(default_factory=list)


@dataclass
class GraphGroup:
    """One torch-pruning group with its slimdeploy description."""

    info: ChannelGroup
    tp_group: object
    root: nn.Module
    handler: object


def _moved_to(value, device: torch.device):
    """`value` (tensors, possibly nested in tuples, lists and dicts) with every tensor on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_moved_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _moved_to(v, device) for k, v in value.items()}
    return value


def build_graph(module: nn.Module, inputs: tuple) -> tp.DependencyGraph:
    """Trace `module` on `inputs` (positional arguments) into a torch-pruning DependencyGraph.

    Modules with an adapter layer rule are traced as single layers pruned by that rule.
    """
    rules = adapters.layer_rules(module)
    first = next(module.parameters(), None)
    if first is not None:  # the analysis may have been traced on the CPU and the model moved to CUDA since
        inputs = _moved_to(inputs, first.device)
    adapters.clear_caches(module)  # a cached tensor computed without gradient would hide its parameters
    try:
        with torch.enable_grad(), adapters.opaque(module, list(rules)):
            return tp.DependencyGraph().build_dependency(
                module, example_inputs=inputs, forward_fn=lambda m, x: m(*x), verbose=False,
                customized_pruners=rules)
    finally:
        adapters.clear_caches(module)  # the traced forward filled them with tensors deepcopy refuses


def iter_groups(graph: tp.DependencyGraph, prefix: str, ignored: Sequence[nn.Module],
                fixed: list[str] | None = None) -> Iterator[GraphGroup]:
    """Yield the prunable groups of a graph, lazily, so each is computed after earlier pruning.

    Skipped: groups that change the traced module's input or output, that touch an ignored layer
    or a side of a layer an adapter structure prunes, or of width 1; and groups through a side of a
    layer that cannot lose channels on its own (their names are appended to `fixed`). A group is
    named after its earliest layer (in module order) whose output it prunes.
    """
    ignored_ids = {id(m) for m in ignored}
    names = graph._module2name
    param_names = getattr(graph, "_param_to_name", {})
    order = {m: i for i, m in enumerate(graph.model.modules())}
    hints = adapters.divisor_hints(graph.model)
    owned = adapters.owned_sides(graph.model)
    roots = ROOT_TYPES + tuple(graph.CUSTOMIZED_PRUNERS)  # adapter layers start groups too (SplitAttn's output)
    for group in graph.get_all_groups(ignored_layers=list(ignored), root_module_types=roots):
        if _touches_boundary(graph, group):
            continue
        targets = [dep.target.module for dep, _ in group]
        if any(id(t) in ignored_ids for t in targets) or _owned_by_structure(graph, group, owned):
            continue
        root = group[0].dep.target.module
        width = len(group[0].idxs)
        if width < 2 or root not in names:
            continue
        producers = [dep.target.module for dep, _ in group
                     if dep.target.module in order and graph.is_out_channel_pruning_fn(dep.handler)
                     and (isinstance(dep.target.module, ROOT_TYPES) or _output_layer(dep.target.module))]
        first = min(producers, key=order.__getitem__, default=root)
        name = _join(_join(prefix, names[first]), _output_layer(first) or "")
        divisor = _group_divisor(graph, group, hints)
        if divisor is None:  # a side of a layer that cannot lose channels on its own
            if fixed is not None:
                fixed.append(name)
            continue
        layers = {_join(prefix, names[t]) for t in targets if isinstance(t, nn.Module) and t in names}
        layers |= {_join(prefix, param_names[t]) for t in targets if isinstance(t, nn.Parameter) and t in param_names}
        info = ChannelGroup(name, width, divisor, tuple(sorted(layers)))
        yield GraphGroup(info, group, root, group[0].dep.handler)


def _group_divisor(graph: tp.DependencyGraph, group, hints: dict) -> int | None:
    """The least common multiple of every coupled layer side's block count; None if a side is fixed."""
    divisor = 1
    for dep, _ in group:
        t = dep.target.module
        if isinstance(t, nn.Module) and t in graph._module2name:
            side = _channel_divisor(t, graph.is_out_channel_pruning_fn(dep.handler))
            if side is None:
                return None
            divisor = math.lcm(divisor, side, hints.get(t, 1))
    return divisor


def _output_layer(module: nn.Module) -> str | None:
    rule = adapters.rule_of(module)
    return rule.output_layer(module) if rule is not None else None


def _owned_by_structure(graph: tp.DependencyGraph, group, owned: set) -> bool:
    for dep, _ in group:
        module, out = dep.target.module, graph.is_out_channel_pruning_fn(dep.handler)
        rule = adapters.rule_of(module)
        if (rule is not None and rule.owned(module, out)) or (module, out) in owned:
            return True
    return False


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


REPLAY_SLACK = 10  # a planned analysis may take this many times the bound: the plan was proven once


def analyse(model: nn.Module, example_input: torch.Tensor | tuple, ignored: Sequence[str] = (),
            memory_gb: float = DEFAULT_MEMORY_GB, seconds: float = DEFAULT_SECONDS,
            plan: Sequence[str] | None = None) -> Analysis:
    """Return the model's width space, falling back to smaller scopes where analysis fails.

    `plan` (the scope paths of an earlier analysis, as a pruning step records them) analyses
    exactly those scopes, with no fallback: replaying a saved model then finds the same groups on
    a slower or busier machine, where the time or memory bound might have split the model otherwise.
    """
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    ignored_modules = _resolve_ignored(model, ignored)
    scopes: list[Scope] = []
    notes: list[str] = []
    with evaluating(model):
        view = adapters.analysis_view(model)
        if plan is None:
            _analyse_scope(Scope("", view, inputs), ignored_modules, scopes, notes, memory_gb, seconds)
        else:
            for scope in _planned_scopes(view, inputs, plan):
                with guarded(memory_gb * REPLAY_SLACK, seconds * REPLAY_SLACK,
                             f"dependency analysis of {scope.path or 'the model'}"):
                    scope.groups, broken = _trial(scope, ignored_modules)
                _note_broken(scope, broken, notes)
                scopes.append(scope)
        structures = _structures(model, inputs, ignored, notes)
    groups = [g for s in scopes for g in s.groups] + [g for st in structures for g in st.groups]
    cls = type(model)
    return Analysis(WidthSpace(tuple(groups), f"{cls.__module__}.{cls.__qualname__}"), scopes, notes, structures)


def pruning_order(scopes: Sequence[Scope]) -> list[Scope]:
    """Scopes inside others first: an outer scope may change an inner scope's boundary widths,
    which would no longer match the inner scope's recorded inputs."""
    return sorted(scopes, key=lambda s: -(s.path.count(".") + 1 if s.path else 0))


def _structures(model: nn.Module, inputs: tuple, ignored: Sequence[str], notes: list[str]) -> list:
    """Adapter structures, proven like a scope: a copy pruned to about half must keep its output shapes."""
    found = []
    for st in adapters.find_structures(model):
        st.groups = [g for g in st.groups if not set(g.layers) & set(ignored)]
        if st.groups:
            found.append(st)
    if not found:
        return []
    trial = copy.deepcopy(model)
    try:
        for st in found:
            st.prune(trial, {g.name: max(g.divisor, g.width // 2 // g.divisor * g.divisor) for g in st.groups},
                     FirstChannels())
        adapters.after_prune(trial)
        with torch.no_grad():
            reference = _output_shapes(adapters.analysis_view(model)(*inputs))
            shapes = _output_shapes(adapters.analysis_view(trial)(*inputs))
        if shapes != reference:
            raise RuntimeError(f"pruned copy changed the output shapes {reference} -> {shapes}")
    except Exception as exc:  # an adapter that does not fit this model variant offers nothing
        notes.append(f"{type(found[0]).__name__}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}; "
                     f"its widths are not offered")
        return []
    return found


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
            scope.groups, broken = _trial(scope, ignored)
        _note_broken(scope, broken, notes)
        if scope.groups:
            scopes.append(scope)
        parents = [(name, m) for name, m in scope.module.named_modules()
                   if name and (rule := adapters.rule_of(m)) is not None and rule.analyse_children]
        for child in _child_scopes(scope, parents):
            _analyse_scope(child, ignored, scopes, notes, memory_gb, seconds)
        return
    except LimitExceeded as exc:
        reason = str(exc)
    except Exception as exc:  # torch-pruning raises many kinds on constructs it cannot trace
        reason = _one_line(exc)
    children = _child_scopes(scope, [("", scope.module)])
    notes.append(f"{scope.path or 'model'}: {reason}; analysed its {len(children)} part(s) separately, "
                 f"keeping their boundary widths")
    for child in children:
        _analyse_scope(child, ignored, scopes, notes, memory_gb, seconds)


def _note_broken(scope: Scope, broken: list[tuple[str, str]], notes: list[str]) -> None:
    if broken:
        notes.append(f"{scope.path or 'model'}: {len(broken)} group(s) left at full width because pruning them "
                     f"breaks the model or cannot be done: "
                     + "; ".join(f"{name} ({why})" for name, why in broken[:4]) + (" ..." if len(broken) > 4 else ""))


def _planned_scopes(view: nn.Module, inputs: tuple, plan: Sequence[str]) -> list[Scope]:
    """The scopes at the paths of `plan`, each with the inputs of its first call in a forward pass."""
    try:
        modules = {path: view.get_submodule(path) if path else view for path in plan}
    except AttributeError as exc:
        raise SlimdeployError(f"the recorded analysis plan names a part this model does not have ({exc})") from None
    captured = {"": inputs, **_first_call_inputs(view, inputs, {p: m for p, m in modules.items() if p})}
    missing = [path for path in plan if path not in captured]
    if missing:
        raise SlimdeployError(f"the recorded analysis plan names parts this model never calls: {', '.join(missing)}")
    return [Scope(path, modules[path], captured[path]) for path in plan]


MAX_TRIALS = 40  # pruned copies tried to single out the groups that break a scope


def _trial(scope: Scope, ignored: list[nn.Module]) -> tuple[list[ChannelGroup], list[tuple[str, str]]]:
    """The scope's groups that survive pruning, and (name, reason) of those left out: the ones that
    break it and the ones through a layer side that cannot lose channels alone.

    A copy is pruned to about half in every group (`_trial_positions`), must lose exactly the
    channels asked of each group and must still run with the same output shapes. When it does not,
    the breaking groups are singled out by bisection (each half of the suspects pruned on a fresh
    copy) and left out; the rest must then pass together.
    Raises when the analysis itself fails or no subset passes.
    """
    with torch.no_grad():
        reference = _output_shapes(scope.module(*scope.inputs))
    fixed: list[str] = []
    groups, error = _prune_half(scope, ignored, reference, None, fixed)
    fixed_note = [(name, "feeds a grouped convolution side with one channel per group") for name in fixed]
    if error is None:
        return groups, fixed_note
    budget = [MAX_TRIALS]
    broken: list[tuple[str, str]] = []

    def single_out(names: list[str], failure: Exception) -> None:
        if len(names) == 1:
            broken.append((names[0], _one_line(failure)[:120]))
            return
        for half in (names[: len(names) // 2], names[len(names) // 2:]):
            if budget[0] <= 0:
                raise error
            budget[0] -= 1
            fail = _prune_half(scope, ignored, reference, set(half))[1]
            if fail is not None:
                single_out(half, fail)

    single_out([g.name for g in groups], error)
    bad = {name for name, _ in broken}
    kept = [g for g in groups if g.name not in bad]
    if kept and _prune_half(scope, ignored, reference, {g.name for g in kept})[1] is not None:
        raise error
    return kept, broken + fixed_note


def _prune_half(scope: Scope, ignored: list[nn.Module], reference: list, names: set | None,
                fixed: list[str] | None = None) -> tuple[list[ChannelGroup], Exception | None]:
    """Prune a copy of the scope to about half in the groups `names` (None: all of them).

    Returns the scope's groups (listed before any pruning) and the error that breaks the pruned
    copy, or None. While pruning, groups are looked up lazily, after the earlier ones were pruned,
    as `prune` does; groups that only appear after pruning are left alone.
    """
    trial = copy.deepcopy(scope.module)
    twin = dict(zip(scope.module.modules(), trial.modules()))
    graph = build_graph(trial, scope.inputs)
    twins_ignored = [twin[m] for m in ignored if m in twin]
    groups = [item.info for item in iter_groups(graph, scope.path, twins_ignored, fixed)]
    names = {g.name for g in groups} if names is None else names
    for item in iter_groups(graph, scope.path, twins_ignored):
        g = item.info
        if g.name not in names:
            continue
        keep = max(g.divisor, (g.width // 2) // g.divisor * g.divisor)
        block = g.width // g.divisor
        drop = block - keep // g.divisor
        remove = [b * block + p for b in range(g.divisor) for p in _trial_positions(block, drop)]
        try:
            before = _root_width(graph, item)
            prune_group(graph, item, remove)
            _check_removed(graph, item, before, len(remove))
        except (LimitExceeded, MemoryError):
            raise
        except Exception as exc:  # a group torch-pruning cannot prune breaks like one that breaks the forward
            return groups, exc
    if not groups:
        return groups, None
    adapters.after_prune(trial)
    try:
        with torch.no_grad(), evaluating(trial):
            shapes = _output_shapes(trial(*scope.inputs))
    except (LimitExceeded, MemoryError):
        raise
    except Exception as exc:
        return groups, exc
    if shapes != reference:
        return groups, RuntimeError(f"pruned copy changed the output shapes {reference} -> {shapes}")
    return groups, None


def _trial_positions(block: int, drop: int) -> list[int]:
    """`drop` of a block's `block` positions for the trial: the lowest half of them, the rest every
    other position down from the top. Low and high positions both go, so mappings wrong at either end
    show, and the set is not symmetric under a shift, so channels tied to others (i and i + block/2)
    show as more channels removed than asked."""
    low = list(range((drop + 1) // 2))
    high = [p for p in range(block - 1, -1, -2) if p >= len(low)][: drop - len(low)]
    chosen = set(low) | set(high)
    chosen |= set([p for p in range(block) if p not in chosen][: drop - len(chosen)])
    return sorted(chosen)


def _root_width(graph: tp.DependencyGraph, item: GraphGroup) -> int | None:
    """The channel count of the group's root layer on the pruned side."""
    if graph.is_out_channel_pruning_fn(item.handler):
        return graph.get_out_channels(item.root)
    return graph.get_in_channels(item.root)


def _check_removed(graph: tp.DependencyGraph, item: GraphGroup, before: int | None, removed: int) -> None:
    """Raise unless pruning removed exactly `removed` root channels.

    A group whose channels map onto each other (GhostNet concatenates a tensor with a depthwise
    copy of itself, so one root channel is tied to two) loses more than it was asked to, and
    widths in it could not be exact.
    """
    after = _root_width(graph, item)
    if before is not None and after is not None and before - after != removed:
        raise RuntimeError(f"removing {removed} of {item.info.name}'s channels removed {before - after}: "
                           f"its channels are coupled to each other, so no width in it would be exact")


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def _child_scopes(scope: Scope, parents: list[tuple[str, nn.Module]]) -> list[Scope]:
    """The children of `parents` (paths within the scope) that hold prunable layers, with the
    inputs of their first call in a forward pass of the scope."""
    candidates = [(_join(path, name), child) for path, parent in parents for name, child in parent.named_children()
                  if any(isinstance(m, ROOT_TYPES) for m in child.modules())]
    captured = _first_call_inputs(scope.module, scope.inputs, dict(candidates))
    return [Scope(_join(scope.path, name), child, captured[name])
            for name, child in candidates if name in captured]


def _first_call_inputs(run: nn.Module, inputs: tuple, targets: dict[str, nn.Module]) -> dict[str, tuple]:
    """The positional inputs of each target's first call (tensors only) in one forward pass of `run`."""
    captured: dict[str, tuple] = {}
    hooks = []
    for name, module in targets.items():
        def hook(mod, args, name=name):
            if name not in captured and all(isinstance(a, torch.Tensor) for a in args):
                captured[name] = tuple(a.detach().clone() for a in args)
        hooks.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            run(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return captured


def _is_graph_op(module: nn.Module) -> bool:
    """torch-pruning's stand-ins for functional ops (add, cat, reshape, transpose of a weight)."""
    return type(module).__module__ == tp.ops.__name__ and type(module).__name__.startswith("_")


def _channel_divisor(module: nn.Module, out: bool = True) -> int | None:
    """How many equal blocks one side of a layer's channels forms (conv groups, GroupNorm groups,
    heads); None when that side cannot lose channels on its own (one channel per conv group)."""
    rule = adapters.rule_of(module)
    if rule is not None:
        return rule.divisor(module, out)
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        if module.groups == module.in_channels == module.out_channels:
            return 1  # depthwise: input and output channels go together
        per_group = (module.out_channels if out else module.in_channels) // module.groups
        return module.groups if per_group > 1 else None
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
