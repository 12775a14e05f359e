"""What `slimdeploy inspect` reports: channel groups, MACs, params, the structure fingerprint, and
the share of params and MACs the offered widths can remove (so a fallback that left most of the
model fixed shows at once)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from .analysis import Analysis, analyse
from .importance import FirstChannels
from .modes import evaluating
from .prune import prune
from .space import Widths


def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass at `example_input`, and the parameter count.

    Counted with forward hooks matched by isinstance, so subclasses (same-padding convs) count:
    conv k_h·k_w·(c_in/groups)·c_out·H_out·W_out, linear in·out per row, multi-head attention its
    four projections plus the two attention products. Norms and activations are not counted.
    """
    macs = 0

    def conv(module, args, output):
        nonlocal macs
        kernel = math.prod(module.kernel_size) * (module.in_channels // module.groups)
        macs += kernel * output.numel()

    def linear(module, args, output):
        nonlocal macs
        macs += module.in_features * output.numel()

    def attention(module, args, output):
        nonlocal macs
        query, key = args[0], args[1]
        e, lq, lk = module.embed_dim, query.shape[-2 if module.batch_first else 0], key.shape[-2 if module.batch_first else 0]
        batch = query.numel() // (lq * e)
        macs += batch * (2 * lq * e * e + 2 * lk * e * e + 2 * lq * lk * e)

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear) and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear):
            hooks.append(m.register_forward_hook(linear))
        elif isinstance(m, nn.MultiheadAttention):
            hooks.append(m.register_forward_hook(attention))
    try:
        with torch.no_grad(), evaluating(model):
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    return int(macs), sum(p.numel() for p in model.parameters())


def prunable_share(model: nn.Module, example_input: torch.Tensor, analysis: Analysis,
                   ignored: Sequence[str] = ()) -> dict:
    """The share of params and MACs the offered widths can remove: every group cut to its smallest
    width (one block of its divisor; where a model cannot run that narrow, one step of 8) and
    counted. Groups left at full width by a fallback or an adapter make this small; a plain ResNet
    reaches well over 90 %. `smallest` says which of the two cuts was counted."""
    macs, params = count_macs_params(model, example_input)
    if not len(analysis.space):
        return {"params": 0.0, "macs": 0.0, "smallest_params": params, "smallest_macs": macs, "smallest": None}
    error = None
    for label, width in (("divisor", lambda g: g.divisor), ("step of 8", lambda g: g.unit(8))):
        smallest = Widths(analysis.space.fingerprint, {g.name: width(g) for g in analysis.space})
        try:
            cut = prune(model, smallest, example_input, importance=FirstChannels(), ignored=ignored,
                        analysis=analysis)
            cut_macs, cut_params = count_macs_params(cut, example_input)
        except Exception as exc:  # some models cannot run with single-channel groups (skresnet's attention)
            error = exc
            continue
        return {"params": 1 - cut_params / params, "macs": 1 - cut_macs / macs if macs else 0.0,
                "smallest_params": cut_params, "smallest_macs": cut_macs, "smallest": label}
    raise error


def inspect(model: nn.Module, example_input: torch.Tensor, ignored: Sequence[str] = (),
            analysis: Analysis | None = None) -> dict:
    """A JSON-ready description of the model's width space and cost.

    `prunable` holds `prunable_share`: the fractions of params and MACs that pruning every group
    as far as it goes would remove.
    """
    analysis = analysis or analyse(model, example_input, ignored)
    macs, params = count_macs_params(model, example_input)
    return {
        "model_class": analysis.space.model_class,
        "structure": analysis.space.fingerprint,
        "input_shape": list(example_input.shape),
        "macs": macs,
        "params": params,
        "prunable": prunable_share(model, example_input, analysis, ignored),
        "groups": [g.to_json() for g in analysis.space],
        "notes": analysis.notes,
    }
