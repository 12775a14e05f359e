import torch
import torch.nn as nn
import torchvision

from slimdeploy.inspection import count_macs_params


def test_macs_match_the_published_figures():
    x = torch.randn(1, 3, 224, 224)
    assert round(count_macs_params(torchvision.models.resnet18(), x)[0] / 1e6) == 1814
    assert round(count_macs_params(torchvision.models.mobilenet_v2(), x)[0] / 1e6) == 301


def test_conv_subclasses_and_batches_are_counted():
    class SamePadConv(nn.Conv2d):
        pass

    model = nn.Sequential(SamePadConv(3, 8, 3, padding=1, groups=1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    macs, params = count_macs_params(model, torch.randn(2, 3, 4, 4))
    assert macs == 2 * (9 * 3 * 8 * 16 + 9 * 1 * 8 * 16 + 128 * 10)
    assert params == sum(p.numel() for p in model.parameters())
