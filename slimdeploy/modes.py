"""Switch a model to eval mode and back without relying on what `train()`/`eval()` return.

`nn.Module.eval()` returns whatever `train(False)` returns, and models that override `train`
(timm's LeViT and EfficientFormer clear attention-bias caches there) return None, so
`model.eval()(x)` fails on them. Call the method for its effect only, as these helpers do.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn


def set_eval(model: nn.Module) -> nn.Module:
    """Put `model` in eval mode and return the model itself (not `eval()`'s return value)."""
    model.eval()
    return model


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode inside the block; every module's own mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        model.train(modes[0][1])
        for module, training in modes:
            module.training = training
