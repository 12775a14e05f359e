"""Weights trained for many widths at once, which shared-weight searchers score candidates on.

A searcher names the kind it needs in `Searcher.shared_weights` ("supernet", ...). Before searching,
the pipeline asks `provide(kind, context)` for them: each kind is a provider function found by
name (imported only when used), so a method adds its own training without touching the pipeline.
A provider returns an object with:

* ``scorer(calibration, held_out) -> (widths -> accuracy)``, the search's accuracy estimate;
* ``extract(widths, calibration=...) -> nn.Module``, the physically pruned model a budget delivers;
* ``summary() -> dict`` for report.json, and ``score_kind``, a phrase saying what the score is.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .analysis import Analysis
from .errors import SlimdeployError
from .options import CompressOptions
from .space import Widths

PROVIDERS = {
    "supernet": "slimdeploy.supernet.provider:provide",
    "adaptive": "slimdeploy.adaptive.provider:provide",
    "pareco": "slimdeploy.supernet.pareco_provider:pareco",
    "slim-uniform": "slimdeploy.supernet.pareco_provider:slim_uniform",
    "twostage": "slimdeploy.supernet.pareco_provider:twostage",
    "cafenet": "slimdeploy.supernet.cafenet_provider:provide",
}


@dataclass
class WeightsContext:
    """What a provider may use: the model, its analysis, the scoring data, the options, a progress line.

    `workdir`, when given, is a directory the provider may checkpoint its training in and resume
    from (a rerun with --resume finds its checkpoint or finished weights there).
    `latency` (widths → latency ratio to the original, the search's cost) and `offered` (the
    latency staircase's widths per group) are given when the caller has a latency source;
    methods whose training depends on cost (PareCO, CafeNet) use them.
    """

    model: nn.Module
    example: torch.Tensor
    analysis: Analysis
    data: dict[str, Any]
    options: CompressOptions
    say: Callable[[str], None]
    workdir: Path | None = None
    latency: Callable[[Widths], float] | None = None
    offered: dict[str, list[int]] | None = None


def provide(kind: str, context: WeightsContext) -> Any:
    """Train (or load) the shared weights of `kind` for this model."""
    if kind not in PROVIDERS:
        raise SlimdeployError(f"no shared-weight trainer named {kind!r}; known: {', '.join(sorted(PROVIDERS))}")
    module_name, _, attr = PROVIDERS[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)(context)
