"""MACs and params counted from widths equal those of the physically pruned model, exactly."""
from __future__ import annotations

import pytest
import torch
import torchvision

from slimdeploy.analysis import analyse
from slimdeploy.channels import ChannelMap
from slimdeploy.costs import CostModel
from slimdeploy.importance import FirstChannels
from slimdeploy.inspection import count_macs_params
from slimdeploy.prune import prune


def small_vit():
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                hidden_dim=64, mlp_dim=128, num_classes=10)


@pytest.mark.parametrize("name, build", [
    ("resnet18 (residual adds)", lambda: torchvision.models.resnet18()),
    ("mobilenet_v2 (depthwise)", lambda: torchvision.models.mobilenet_v2()),
    ("googlenet (concatenation)", lambda: torchvision.models.googlenet(aux_logits=False, init_weights=True)),
    ("vgg11_bn (flattened classifier)", lambda: torchvision.models.vgg11_bn()),
    ("regnet_x_400mf (grouped convs)", lambda: torchvision.models.regnet_x_400mf()),
    ("vit (attention, layer norm, tokens)", small_vit),
])
def test_counts_from_widths_equal_the_pruned_models(name, build):
    model = build().eval()
    x = torch.randn(1, 3, 32, 32)
    analysis = analyse(model, x)
    costs = CostModel.build(model, x, ChannelMap.build(model, analysis))
    assert costs.counts(analysis.space.full()) == count_macs_params(model, x)
    for widths in (analysis.space.random(0), analysis.space.uniform(0.5)):
        pruned = prune(model, widths, x, importance=FirstChannels(), analysis=analysis)
        assert costs.counts(widths) == count_macs_params(pruned, x), name
