"""Exact-width physical pruning on real torchvision architectures (random init, smallest input each allows)."""
import functools

import pytest
import torch
import torch.nn as nn

from slimdeploy.analysis import analyse
from slimdeploy.checkpoint import load, save
from slimdeploy.errors import SlimdeployError
from slimdeploy.export import export_onnx, verify_onnx
from slimdeploy.importance import MagnitudeImportance
from slimdeploy.prune import channels_to_remove, prune
from slimdeploy.space import Widths
from slimdeploy.zoo import build

ARCHITECTURES = {
    "resnet18": 64, "resnet50": 64, "mobilenet_v2": 64, "mobilenet_v3_small": 64, "efficientnet_b0": 64,
    "regnet_x_400mf": 64, "convnext_tiny": 64, "densenet121": 64, "googlenet": 64,
    "shufflenet_v2_x1_0": 64, "squeezenet1_1": 64, "vgg11_bn": 64, "vit_b_16": 224,
}


@functools.lru_cache(maxsize=None)
def case(name):
    torch.manual_seed(0)
    model = build(f"torchvision:{name}").eval()
    x = torch.randn(1, 3, ARCHITECTURES[name], ARCHITECTURES[name])
    analysis = analyse(model, x)
    variants = {}
    for label, widths in (("uniform", analysis.space.uniform(0.5)), ("random", analysis.space.random(0))):
        variants[label] = (widths, prune(model, widths, x, analysis=analysis).eval())
    return model, x, analysis, variants


def out_width(module: nn.Module) -> int:
    return module.out_channels if hasattr(module, "out_channels") else module.out_features


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_prunes_every_group_to_exactly_the_requested_width(name):
    model, x, analysis, variants = case(name)
    assert len(analysis.space) >= 5, analysis.notes
    for label, (widths, pruned) in variants.items():
        got = {g: out_width(pruned.get_submodule(g)) for g in widths.widths}
        assert got == dict(widths.widths), label
        assert any(w < analysis.space.group(g).width for g, w in widths.widths.items())


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_pruned_model_is_smaller_and_keeps_its_output_shape(name):
    model, x, analysis, variants = case(name)
    with torch.no_grad():
        reference = model(x)
        for label, (widths, pruned) in variants.items():
            assert n_params(pruned) < n_params(model), label
            assert pruned(x).shape == reference.shape
    # ShuffleNetV2 offers only widths inside each branch (its shuffle blocks the stage width), so it shrinks less.
    expected = 0.9 if name == "shufflenet_v2_x1_0" else 0.75
    assert n_params(variants["uniform"][1]) < expected * n_params(model)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_saved_pruned_model_loads_back_with_the_same_outputs(name, tmp_path):
    model, x, analysis, variants = case(name)
    widths, pruned = variants["random"]
    save(pruned, tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert not loaded.training
    assert Widths.load(tmp_path / "m" / "widths.json") == widths
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_pruned_model_exports_to_onnx_within_parity(name, tmp_path):
    model, x, analysis, variants = case(name)
    widths, pruned = variants["uniform"]
    path = export_onnx(pruned, x, tmp_path / "m.onnx")
    report = verify_onnx(pruned, path, x, isolated=False)
    assert report.passed, report.summary()
    assert report.max_abs_error < 1e-4 and report.top1_agreement == 1.0


def test_shufflenet_channel_shuffle_falls_back_to_widths_inside_each_branch():
    model, x, analysis, variants = case("shufflenet_v2_x1_0")
    assert any("ZeroDivisionError" in note for note in analysis.notes)
    assert all(".branch" in g.name for g in analysis.space)


def test_vit_hidden_width_is_one_group_divisible_by_the_heads():
    model, x, analysis, variants = case("vit_b_16")
    hidden = analysis.space.group("conv_proj")
    assert hidden.width == 768 and hidden.divisor == 12
    pruned = variants["uniform"][1]
    assert pruned.hidden_dim == pruned.conv_proj.out_channels == 384
    assert pruned.encoder.layers[0].self_attention.embed_dim == 384


def test_grouped_convolutions_keep_equal_channels_per_group():
    model, x, analysis, variants = case("regnet_x_400mf")
    grouped = [g for g in analysis.space if g.divisor > 1]
    assert grouped
    widths, pruned = variants["random"]
    for g in grouped:
        assert widths[g.name] % g.divisor == 0


def test_l2_importance_keeps_the_channels_with_the_largest_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    with torch.no_grad():
        scale = torch.tensor([1., 9, 2, 8, 3, 7, 4, 6]).view(8, 1, 1, 1)
        model[0].weight.copy_(model[0].weight.sign() * scale)
        model[3].weight.fill_(0.1)
    x = torch.randn(1, 3, 16, 16)
    analysis = analyse(model, x)
    assert [g.name for g in analysis.space] == ["0"]
    pruned = prune(model, Widths(analysis.space.fingerprint, {"0": 4}), x, importance="l2", analysis=analysis)
    kept = pruned[0].weight.abs().amax(dim=(1, 2, 3))
    assert sorted(kept.round().tolist()) == [6, 7, 8, 9]


def test_channels_to_remove_drops_the_same_positions_in_every_block():
    scores = torch.tensor([1., 5, 2, 6, 1.5, 5, 2.5, 6])  # two blocks of four
    assert channels_to_remove(scores, 8, 4, divisor=2) == [0, 2, 4, 6]
    assert channels_to_remove(scores, 8, 6, divisor=1) == [0, 4]


@pytest.mark.parametrize("importance", ["l1", "bn", "taylor"])
def test_other_importance_criteria_prune_to_the_same_shapes(importance):
    model, x, analysis, variants = case("resnet18")
    widths, reference = variants["uniform"]
    batch = (torch.randn(4, *x.shape[1:]), torch.tensor([1, 2, 3, 4]))
    pruned = prune(model, widths, x, importance=importance, batch=batch, analysis=analysis)
    assert {n: p.shape for n, p in pruned.named_parameters()} == {n: p.shape for n, p in reference.named_parameters()}
    assert all(p.grad is None for p in pruned.parameters())


def test_taylor_without_a_batch_says_what_it_needs():
    model, x, analysis, variants = case("resnet18")
    with pytest.raises(SlimdeployError, match="taylor importance needs a batch"):
        prune(model, variants["uniform"][0], x, importance="taylor", analysis=analysis)


def test_ignored_layers_keep_their_shapes():
    model, x, _, _ = case("resnet18")
    analysis = analyse(model, x, ignored=["layer1.0.conv1"])
    assert "layer1.0.conv1" not in [g.name for g in analysis.space]
    pruned = prune(model, analysis.space.uniform(0.5), x, ignored=["layer1.0.conv1"], analysis=analysis)
    assert pruned.layer1[0].conv1.weight.shape == model.layer1[0].conv1.weight.shape
    with pytest.raises(SlimdeployError, match="no layer named"):
        analyse(model, x, ignored=["layer9"])


def test_pruning_does_not_modify_the_callers_model():
    model, x, analysis, variants = case("mobilenet_v2")
    fresh = build("torchvision:mobilenet_v2")
    assert {n: p.shape for n, p in model.named_parameters()} == {n: p.shape for n, p in fresh.named_parameters()}


def test_widths_for_another_model_are_refused():
    model, x, analysis, _ = case("resnet18")
    other = case("resnet50")[2].space.uniform(0.5)
    with pytest.raises(SlimdeployError, match="made for structure"):
        prune(model, other, x, analysis=analysis)
