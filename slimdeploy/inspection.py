"""What `slimdeploy inspect` reports: channel groups, MACs, params and the structure fingerprint."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch_pruning as tp

from .analysis import Analysis, analyse


def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass at `example_input`, and the parameter count."""
    was_training = model.training
    try:
        macs, params = tp.utils.count_ops_and_params(model.eval(), example_input)
    finally:
        model.train(was_training)
    return int(macs), int(params)


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
