import pytest
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


def _two_convs():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def test_prunable_share_is_what_the_smallest_widths_remove():
    from slimdeploy.inspection import inspect

    model, x = _two_convs(), torch.randn(1, 3, 8, 8)
    report = inspect(model, x, ignored=["6"])  # the classifier stays, so group "2" (its input) is not offered
    assert [g["name"] for g in report["groups"]] == ["0"]
    full_params = (3 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 10 + 10)
    cut_params = (3 * 9 * 1 + 1) + (1 * 9 * 64 + 64) + (64 * 10 + 10)
    full_macs = 9 * 3 * 32 * 64 + 9 * 32 * 64 * 64 + 64 * 10
    cut_macs = 9 * 3 * 1 * 64 + 9 * 1 * 64 * 64 + 64 * 10
    share = report["prunable"]
    assert share["smallest"] == "divisor"
    assert (report["params"], share["smallest_params"]) == (full_params, cut_params)
    assert (report["macs"], share["smallest_macs"]) == (full_macs, cut_macs)
    assert share["params"] == pytest.approx(1 - cut_params / full_params)
    assert share["macs"] == pytest.approx(1 - cut_macs / full_macs)


def test_prunable_share_shows_a_fallback_that_left_the_model_fixed():
    from slimdeploy.inspection import inspect

    resnet = inspect(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))["prunable"]
    assert resnet["params"] > 0.95 and resnet["macs"] > 0.95
    fixed = inspect(_two_convs(), torch.randn(1, 3, 8, 8), ignored=["2"])  # nothing left to offer
    assert fixed["groups"] == [] and fixed["prunable"]["params"] == 0.0
