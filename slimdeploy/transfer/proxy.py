"""Build the cheap proxy of a model: fewer blocks per stage, narrower, at a lower input resolution.

Depth goes first (the shape-preserving blocks after the first `depth` of each stage are dropped
from a copy), then width (the copy is pruned physically to a uniform multiplier, keeping each
group's most important channels, so the proxy starts from the target's trained weights), both
analysed at the proxy's input size. The proxy's data is the same dataset at that size, its
training part cut to the `data` fraction by a fixed-seed draw (the search split stays whole, so
candidates are scored on as many samples as on the target).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import Subset

from ..analysis import Analysis, analyse
from ..errors import SlimdeployError
from ..inspection import count_macs_params
from ..prune import prune
from .layout import Layout, Stage, run_eval
from .spec import ProxySpec


@dataclass
class Proxy:
    """The proxy model, its example input and analysis, where its groups sit, and the grid it searches on."""

    model: nn.Module
    example: torch.Tensor
    analysis: Analysis
    layout: Layout
    align: int
    spec: ProxySpec
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        macs, params = count_macs_params(self.model, self.example)
        return {"spec": self.spec.text(), "input_shape": list(self.example.shape), "align": self.align,
                "groups": len(self.analysis.space), "macs": macs, "params": params,
                "blocks_per_stage": [len(s.blocks) for s in self.layout.stages], "build_seconds": self.seconds,
                "notes": list(self.notes)}


def build_proxy(model: nn.Module, example: torch.Tensor, spec: ProxySpec, target: Layout, align: int = 8,
                importance: str = "l2", say: Callable[[str], None] = lambda text: None) -> Proxy:
    """The proxy `spec` describes, built from `model` (left unchanged) whose layout is `target`."""
    started = time.perf_counter()
    x = proxy_input(example, spec)
    proxy = shallower(model, target.stages, spec.depth) if spec.depth else copy.deepcopy(model)
    _check_runs(proxy, x, spec)
    notes = []
    proxy_align = max(1, round(align * spec.width))
    if spec.width < 1:
        analysis = analyse(proxy, x)
        if not len(analysis.space):
            raise SlimdeployError("width: the model has no prunable channel groups to narrow; drop width= "
                                  "from --proxy")
        proxy = prune(proxy, analysis.space.uniform(spec.width, proxy_align), x,
                      importance=importance if importance != "taylor" else "l2", analysis=analysis)
        notes.append(f"narrowed to {spec.width:g} of every group's width (widths multiples of {proxy_align})")
    if spec.depth:
        notes.append(f"at most {spec.depth} block(s) per stage")
    analysis = analyse(proxy.eval(), x)
    layout = Layout.of(proxy, x, analysis.space)
    say(f"proxy ({spec.text()}): {len(analysis.space)} groups, blocks per stage "
        f"{[len(s.blocks) for s in layout.stages]}, input {tuple(x.shape)}")
    return Proxy(proxy, x, analysis, layout, proxy_align, spec, time.perf_counter() - started, notes)


def proxy_input(example: torch.Tensor, spec: ProxySpec) -> torch.Tensor:
    """An example input at the proxy's resolution (the target's when the spec keeps it)."""
    if example.ndim < 3 or (spec.resolution in (None, 1.0) and spec.pixels is None):
        return example.detach().clone()
    size = spec.size(*example.shape[-2:])
    return torch.randn(*example.shape[:-2], *size, generator=torch.Generator().manual_seed(0))


def shallower(model: nn.Module, stages: tuple[Stage, ...], keep: int) -> nn.Module:
    """A copy of `model` with at most `keep` blocks per stage (dropping shape-preserving blocks only)."""
    drop = {path for stage in stages for path, ok in list(zip(stage.blocks, stage.preserving))[keep:] if ok}
    if not drop:
        found = ", ".join(str(len(s.blocks)) for s in stages) or "none"
        raise SlimdeployError(f"depth={keep}: no stage of this model has more than {keep} block(s) to drop (blocks "
                              f"per stage found: {found}); drop depth= from --proxy")
    proxy = copy.deepcopy(model)
    modules = dict(proxy.named_modules())
    for container in sorted({path.rpartition(".")[0] for path in drop}):
        holder = modules[container]
        kept = [(name, m) for name, m in holder._modules.items() if _join(container, name) not in drop]
        holder._modules.clear()
        for i, (name, m) in enumerate(kept):  # a ModuleList is indexed by position: renumber it
            holder._modules[str(i) if isinstance(holder, nn.ModuleList) else name] = m
    return proxy


def proxy_data(data: dict[str, Any], fraction: float, batch_size: int, seed: int) -> dict[str, Any]:
    """`scoring_data`'s dict with its training part cut to `fraction` (fixed seed); the search split kept."""
    if fraction >= 1:
        return data
    from ..data import make_loader

    full = data["train_set"]
    n = max(batch_size, round(len(full) * fraction))
    if n >= len(full):
        return data
    chosen = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed + 11))[:n].sort().values
    part = Subset(full, chosen.tolist())
    calibration = make_loader(part, batch_size, shuffle=True, seed=seed + 1)
    return {**data, "train_set": part, "train": make_loader(part, batch_size, shuffle=True, seed=seed),
            "calibration": [b for _, b in zip(range(len(data["calibration"])), calibration)],
            "info": {**data["info"], "n_train_proxy": n}}


def _check_runs(model: nn.Module, x: torch.Tensor, spec: ProxySpec) -> None:
    try:
        run_eval(model, x)
    except Exception as exc:  # a wrong size surfaces as many exception types
        raise SlimdeployError(f"the proxy ({spec.text()}) does not run on an input of shape {tuple(x.shape)}: "
                              f"{str(exc).splitlines()[0][:160]}; choose a larger resolution or fewer "
                              f"reductions") from None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name
