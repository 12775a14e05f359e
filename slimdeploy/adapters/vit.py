"""torchvision's ViT reshapes the patch embedding with a stored `hidden_dim`."""
from __future__ import annotations

import torch.nn as nn

from .base import fixup


@fixup("torchvision.models.vision_transformer.VisionTransformer")
def _vision_transformer(model: nn.Module) -> None:
    model.hidden_dim = model.conv_proj.out_channels
