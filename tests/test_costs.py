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


@pytest.mark.parametrize("name, build", [
    ("mobilenet_v2 (depthwise)", lambda: torchvision.models.mobilenet_v2()),
    ("googlenet (concatenation)", lambda: torchvision.models.googlenet(aux_logits=False, init_weights=True)),
    ("regnet_x_400mf (grouped convs: one block of positions per group)", lambda: torchvision.models.regnet_x_400mf()),
    ("vit (attention, layer norm, tokens)", small_vit),
])
def test_macs_polynomials_give_the_counted_macs_at_any_widths(name, build):
    from slimdeploy.latency.predictor import polynomial_value

    model = build().eval()
    x = torch.randn(1, 3, 32, 32)
    analysis = analyse(model, x)
    costs = CostModel.build(model, x, ChannelMap.build(model, analysis))
    space = analysis.space
    polys = costs.macs_polynomials([space.full().widths])
    assert polys is not None, name
    kinds = {"depthwise", "conv1x1"} if "mobilenet" in name else {"grouped"} if "regnet" in name else set()
    assert kinds <= set(polys), sorted(polys)
    for seed in range(3):
        widths = space.random(seed).widths
        assert sum(polynomial_value(p, widths) for p in polys.values()) == pytest.approx(costs.counts(widths)[0],
                                                                                          rel=1e-9), name
