"""Apply `Widths` physically: remove the least important channels of every group, no masks."""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import adapters
from .analysis import Analysis, analyse, build_graph, guarded, iter_groups, prune_group, pruning_order
from .errors import SlimdeployError
from .importance import Importance, get_importance
from .modes import evaluating
from .outputs import tensors
from .ranking import channels_to_remove
from .space import Widths
from .zoo import META


def prune(model: nn.Module, widths: Widths, example_input: torch.Tensor, importance: str | Importance = "l2",
          batch: torch.Tensor | tuple | None = None, ignored: Sequence[str] = (),
          analysis: Analysis | None = None) -> nn.Module:
    """Return a copy of `model` whose every channel group has exactly the requested width.

    `importance` picks which channels stay (l2, l1, bn, taylor); taylor needs `batch`
    (inputs, or (inputs, labels); without labels the model's own predictions are used).
    The output shape is unchanged; the caller's model is not modified.
    """
    analysis = analysis or analyse(model, example_input, ignored)
    widths = analysis.space.validate(widths)
    criterion = get_importance(importance)
    pruned = copy.deepcopy(model)
    twin = dict(zip(model.modules(), pruned.modules()))
    ignored_twins = [twin[m] for name, m in model.named_modules() if name in set(ignored)]
    if criterion.needs_gradients:
        _accumulate_gradients(pruned, batch)
    for scope in pruning_order(analysis.scopes):
        target = _scope_module(scope, twin, pruned)
        with guarded(what=f"pruning {scope.path or 'the model'}"):
            graph = build_graph(target, scope.inputs)
            for item in iter_groups(graph, scope.path, ignored_twins):
                g = item.info
                keep = widths.widths.get(g.name, g.width)  # groups the analysis left out stay full
                if keep < g.width:
                    scores = criterion.score_group(item)
                    prune_group(graph, item, channels_to_remove(scores, g.width, keep, g.divisor))
        adapters.after_prune(target)
    for structure in analysis.structures:
        structure.prune(pruned, {g.name: widths[g.name] for g in structure.groups}, criterion)
    adapters.after_prune(pruned)
    pruned.zero_grad(set_to_none=True)
    pruned.train(model.training)
    _record_step(model, pruned, widths, example_input, ignored, [scope.path for scope in analysis.scopes])
    return pruned


def _scope_module(scope, twin: dict, copy_root: nn.Module) -> nn.Module:
    """The copy's counterpart of a scope's module; the root scope may be a view built anew on the copy."""
    return twin[scope.module] if scope.module in twin else adapters.analysis_view(copy_root)


def _accumulate_gradients(model: nn.Module, batch) -> None:
    if batch is None:
        raise SlimdeployError("taylor importance needs a batch of inputs to compute gradients; "
                              "pass batch=... (or choose l2, l1 or bn)")
    inputs, labels = batch if isinstance(batch, (tuple, list)) else (batch, None)
    model.zero_grad(set_to_none=True)
    with torch.enable_grad(), evaluating(model):
        out = model(inputs)
        if isinstance(out, torch.Tensor) and out.dim() == 2:
            loss = F.cross_entropy(out, out.detach().argmax(-1) if labels is None else labels)
        else:  # dense or structured outputs: the squared outputs' sum stands in for a loss
            loss = sum(t.float().pow(2).mean() for t in tensors(out) if t.is_floating_point())
        loss.backward()


def _record_step(source: nn.Module, pruned: nn.Module, widths: Widths, example_input, ignored,
                 scopes: list[str]) -> None:
    """Keep the recipe (source spec + every pruning step) so a saved model rebuilds without pickle;
    `scopes`, the analysis's plan, makes the replay find the same groups whatever the machine."""
    meta = dict(getattr(source, META, None) or {})
    meta.setdefault("input_shape", list(example_input.shape))
    meta["structure"] = widths.structure
    meta["steps"] = list(meta.get("steps", [])) + [{"widths": widths.to_json(), "ignored": list(ignored),
                                                     "scopes": scopes}]
    setattr(pruned, META, meta)


def group_scores(model: nn.Module, analysis: Analysis, importance: str | Importance = "l2") -> dict[str, torch.Tensor]:
    """Per group, its channels' importance sorted from most to least important (model unchanged)."""
    criterion = get_importance(importance)
    scratch = copy.deepcopy(model)
    twin = dict(zip(model.modules(), scratch.modules()))
    scores = {}
    for scope in analysis.scopes:
        with guarded(what=f"scoring {scope.path or 'the model'}"):
            graph = build_graph(_scope_module(scope, twin, scratch), scope.inputs)
            for item in iter_groups(graph, scope.path, []):
                if item.info in scope.groups:
                    scores[item.info.name] = criterion(item.tp_group).detach().float().flatten().sort(descending=True).values
    for structure in analysis.structures:
        for name, values in structure.scores(scratch, criterion).items():
            scores[name] = values.sort(descending=True).values
    return scores


def retained_importance(scores: dict[str, torch.Tensor], widths: Widths) -> float:
    """Data-free score of widths: mean over groups of the importance share the kept channels hold."""
    shares = []
    for name, width in widths.widths.items():
        if name in scores:
            s = scores[name].clamp(min=0)
            shares.append(float(s[:width].sum()) / (float(s.sum()) or 1.0))
    return sum(shares) / max(len(shares), 1)
