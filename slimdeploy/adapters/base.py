"""The five kinds of architecture knowledge, and their registries (keyed by class path strings,
so adapters for timm or torchvision cost no import until a model of theirs shows up).

- fixup: after pruning, update attributes that store a channel count (ViT's `hidden_dim`).
- layer rule: a module torch-pruning must treat as one layer, because tracing through it
  explodes or mis-maps channels (Swin's window attention). Its forward is replaced during tracing
  by a stub whose gradient graph links the module's inputs straight to its output; the rule says
  how to prune its input and output channels, and which widths it allows.
- structure: channel groups torch-pruning cannot follow at all (ShuffleNetV2's stage widths
  through the channel split and shuffle); the adapter finds them and prunes them itself.
- divisor hint: a layer whose channels form equal blocks the layer itself does not show
  (Res2Net splits a convolution's output into equal scales with `torch.split`).
- view: the part of a model to analyse and to export when the whole is not a tensor program
  (a detection model's post-processing), built from the model's own modules under their names.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch_pruning as tp

from ..space import ChannelGroup

FIXUPS: dict[str, Callable[[nn.Module], None]] = {}
LAYER_RULES: dict[str, "LayerRule"] = {}
FINDERS: dict[str, Callable[[nn.Module, str], list["Structure"]]] = {}
HINTS: dict[str, Callable[[nn.Module], dict]] = {}
VIEWS: dict[str, "View"] = {}


def class_path(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _registrar(table: dict, paths: tuple[str, ...], make=lambda obj: obj):
    """A decorator that files `make(obj)` under each class path in `table` and returns obj."""
    def register(obj):
        for path in paths:
            table[path] = make(obj)
        return obj
    return register


def fixup(*paths: str):
    """Register `fn(module)` to run on every module of these classes after pruning."""
    return _registrar(FIXUPS, paths)


@dataclass(frozen=True)
class View:
    analysis: Callable[[nn.Module], nn.Module]
    export: Callable[[nn.Module], nn.Module]
    note: str


def view(path: str, analysis: Callable, export: Callable, note: str) -> None:
    """Register the views of models of class `path`: what to trace, what to export, and where the export stops."""
    VIEWS[path] = View(analysis, export, note)


def analysis_view(model: nn.Module) -> nn.Module:
    """What the dependency analysis traces for `model`: a registered view, else the model."""
    found = VIEWS.get(class_path(model))
    return found.analysis(model) if found else model


def export_view(model: nn.Module) -> tuple[nn.Module, str | None]:
    """What `export_onnx` exports for `model` and a note on where its graph stops (None: the whole model)."""
    found = VIEWS.get(class_path(model))
    return (found.export(model), found.note) if found else (model, None)


def divisor_hint(*paths: str):
    """Register `fn(module) -> {layer: divisor}` for modules of these classes."""
    return _registrar(HINTS, paths)


def layer_rule(*paths: str):
    """Register a `LayerRule` subclass (instantiated once), or a rule instance, for modules of these classes."""
    return _registrar(LAYER_RULES, paths, lambda rule: rule() if isinstance(rule, type) else rule)


def structure(*paths: str):
    """Register `find(module, path) -> [Structure]` for modules of these classes."""
    return _registrar(FINDERS, paths)


class LayerRule(tp.pruner.function.BasePruningFunc):
    """How to prune a module torch-pruning sees as a single layer (subclass; register with `layer_rule`)."""

    #: analyse the module's children as separate scopes (their boundary widths fixed)
    analyse_children = False

    def divisor(self, layer: nn.Module, out: bool) -> int:
        """Widths of a group through this side of the layer must be multiples of this (attention heads)."""
        return 1

    def owned(self, layer: nn.Module, out: bool) -> bool:
        """True when a structure, not torch-pruning, prunes this side (out or in) of the layer."""
        return False

    def output_layer(self, layer: nn.Module) -> str | None:
        """The child whose output channels are the layer's, to name a group it starts (None: not named so)."""
        return None


@dataclass
class Structure:
    """Channel groups an adapter prunes itself. Subclasses implement `prune` and `scores`."""

    groups: list[ChannelGroup]

    def prune(self, model: nn.Module, widths: dict[str, int], criterion) -> None:
        """Prune `model` (the whole model the structure was found in) to `widths` of its groups."""
        raise NotImplementedError

    def scores(self, model: nn.Module, criterion) -> dict[str, torch.Tensor]:
        """Per group, the importance of each channel (higher: keep)."""
        raise NotImplementedError

    def owned_sides(self, root: nn.Module) -> set[tuple[nn.Module, bool]]:
        """(layer, out side?) pairs inside `root` (the module the finder was given) that this
        structure prunes, so torch-pruning's groups through them are not offered as well."""
        return set()


# Eval-mode caches of derived tensors (timm's LeViT and EfficientFormer attention biases): filled
# during a traced forward they hold non-leaf tensors that deepcopy refuses, and after pruning they
# would hold stale shapes.
CACHES = ("attention_bias_cache",)


def clear_caches(module: nn.Module) -> None:
    """Empty the derived-tensor caches inside `module`; the model refills them on its next forward."""
    for sub in module.modules():
        for name in CACHES:
            if isinstance(getattr(sub, name, None), dict):
                setattr(sub, name, {})


def after_prune(module: nn.Module) -> None:
    """Update stored channel counts inside `module` after its channels were removed."""
    for sub in module.modules():
        fix = FIXUPS.get(class_path(sub))
        if fix is not None:
            fix(sub)
    clear_caches(module)


def rule_of(module: object) -> LayerRule | None:
    return LAYER_RULES.get(class_path(module)) if isinstance(module, nn.Module) else None


def layer_rules(model: nn.Module) -> dict[type, LayerRule]:
    """{class: rule} for the classes with a layer rule that occur in `model`."""
    found = {}
    for m in model.modules():
        rule = rule_of(m)
        if rule is not None:
            found[type(m)] = rule
    return found


def divisor_hints(model: nn.Module) -> dict[nn.Module, int]:
    """{layer: divisor} from every registered hint that applies inside `model`."""
    hints: dict[nn.Module, int] = {}
    for m in model.modules():
        hint = HINTS.get(class_path(m))
        if hint is not None:
            hints.update(hint(m))
    return hints


def owned_sides(model: nn.Module) -> set[tuple[nn.Module, bool]]:
    """Every (layer, out side?) inside `model` that a structure found in it prunes itself."""
    owned: set[tuple[nn.Module, bool]] = set()
    for path, m in model.named_modules():
        find = FINDERS.get(class_path(m))
        if find is not None:
            for found in find(m, path):
                owned |= found.owned_sides(m)
    return owned


def find_structures(model: nn.Module) -> list[Structure]:
    """Every structure the registered finders recognise in `model`."""
    out = []
    for path, m in model.named_modules():
        find = FINDERS.get(class_path(m))
        if find is not None:
            out.extend(find(m, path))
    return out


def output_scores(criterion, container: nn.Module, layer: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """`criterion`'s scores of `layer`'s output channels, grouped by torch-pruning inside `container`
    (traced on `example`), so a structure ranks channels as every other group is ranked."""
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(container, example_inputs=(example,),
                                                      forward_fn=lambda m, x: m(*x), verbose=False)
    pruner = graph.get_pruner_of_module(layer)
    group = graph.get_pruning_group(layer, pruner.prune_out_channels, list(range(pruner.get_out_channels(layer))))
    return criterion(group).detach().float().flatten()


class _Stub(torch.autograd.Function):
    """Returns a precomputed output whose gradient graph leads straight to the given inputs."""

    @staticmethod
    def forward(ctx, output, *inputs):
        ctx.n = len(inputs)
        return output.clone()

    @staticmethod
    def backward(ctx, grad):
        return (None,) * (ctx.n + 1)


@contextlib.contextmanager
def opaque(model: nn.Module, classes: Sequence[type]) -> Iterator[None]:
    """Inside the block, modules of `classes` compute their real output without a gradient
    graph inside them, so torch-pruning's trace sees one node from their inputs to their output."""
    stubbed = []
    for m in model.modules():
        if type(m) in classes and "forward" not in vars(m):
            real = m.forward

            def forward(*args, _real=real, **kwargs):
                with torch.no_grad():
                    out = _real(*args, **kwargs)
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                return _Stub.apply(out, *tensors)

            m.forward = forward
            stubbed.append(m)
    try:
        yield
    finally:
        for m in stubbed:
            del m.forward
