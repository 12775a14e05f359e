"""What `slimdeploy inspect` reports: channel groups, MACs, params and the structure fingerprint."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from .analysis import Analysis, analyse


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
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return int(macs), sum(p.numel() for p in model.parameters())


def inspect(model: nn.Module, example_input: torch.Tensor, ignored: Sequence[str] = (),
            analysis: Analysis | None = None) -> dict:
    """A JSON-ready description of the model's width space and cost."""
    analysis = analysis or analyse(model, example_input, ignored)
    macs, params = count_macs_params(model, example_input)
    return {
        "model_class": analysis.space.model_class,
        "structure": analysis.space.fingerprint,
        "input_shape": list(example_input.shape),
        "macs": macs,
        "params": params,
        "groups": [g.to_json() for g in analysis.space],
        "notes": analysis.notes,
    }
