"""Architecture knowledge a dependency graph cannot see: attributes that store channel counts.

A fixup runs on every module of its type after pruning, so the model's forward agrees with its
new shapes. Add one entry per construct; nothing else in the package knows model classes.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn


def _vision_transformer(model: nn.Module) -> None:
    # torchvision's ViT reshapes the patch embedding with a stored `hidden_dim`.
    model.hidden_dim = model.conv_proj.out_channels


def _fixups() -> dict[type, Callable[[nn.Module], None]]:
    fixups: dict[type, Callable[[nn.Module], None]] = {}
    try:
        from torchvision.models.vision_transformer import VisionTransformer
        fixups[VisionTransformer] = _vision_transformer
    except ImportError:  # torchvision is optional for the core
        pass
    return fixups


FIXUPS = _fixups()


def after_prune(module: nn.Module) -> None:
    """Update stored channel counts inside `module` after its channels were removed."""
    for sub in module.modules():
        fix = FIXUPS.get(type(sub))
        if fix is not None:
            fix(sub)
