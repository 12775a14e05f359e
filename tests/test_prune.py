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
from slimdeploy.modes import set_eval

ARCHITECTURES = {
    "resnet18": 64, "resnet50": 64, "mobilenet_v2": 64, "mobilenet_v3_small": 64, "efficientnet_b0": 64,
    "regnet_x_400mf": 64, "convnext_tiny": 64, "densenet121": 64, "googlenet": 64,
    "shufflenet_v2_x1_0": 64, "squeezenet1_1": 64, "vgg11_bn": 64, "vit_b_16": 224, "swin_t": 224,
}


@functools.lru_cache(maxsize=None)
def case(name):
    torch.manual_seed(0)
    model = set_eval(build(f"torchvision:{name}"))
    x = torch.randn(1, 3, ARCHITECTURES[name], ARCHITECTURES[name])
    analysis = analyse(model, x)
    variants = {}
    for label, widths in (("uniform", analysis.space.uniform(0.5)), ("random", analysis.space.random(0))):
        variants[label] = (widths, set_eval(prune(model, widths, x, analysis=analysis)))
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
    assert n_params(variants["uniform"][1]) < 0.75 * n_params(model)


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


def test_shufflenet_stage_widths_are_pruned_through_the_channel_split_and_shuffle():
    model, x, analysis, variants = case("shufflenet_v2_x1_0")
    assert not analysis.notes
    stages = {g.name: g.width for g in analysis.space if g.name.endswith(".0.branch1.2")}
    assert stages == {"stage2.0.branch1.2": 58, "stage3.0.branch1.2": 116, "stage4.0.branch1.2": 232}
    assert {"conv1.0", "conv5.0", "stage3.7.branch2.0"} <= {g.name for g in analysis.space}
    widths, pruned = variants["uniform"]
    half = widths["stage3.0.branch1.2"]
    assert half == 56 and pruned.stage3[0].branch2[5].out_channels == half
    assert [b.branch2[0].in_channels for b in pruned.stage3[1:]] == [half] * 7  # every block's split follows
    assert pruned.stage4[0].branch1[0].in_channels == pruned.stage4[0].branch2[0].in_channels == 2 * half
    assert n_params(pruned) < 0.4 * n_params(model)  # the branch widths alone left 84 % (issue 13)


def test_shufflenet_stage_pruning_keeps_every_kept_channel_on_its_route():
    """Silence the channels the stage will lose: the pruned model must then compute the same outputs."""
    from slimdeploy.adapters.shufflenet import plan
    from slimdeploy.importance import FirstChannels

    torch.manual_seed(0)
    model = set_eval(build("torchvision:shufflenet_v2_x0_5"))
    x = torch.randn(2, 3, 64, 64)
    analysis = analyse(model, x)
    half, new_half = 24, 13  # stage2: 4 blocks, routes through three shuffles
    first_channels = torch.arange(half, 0, -1).float()  # what FirstChannels ranks
    order, _, _ = plan(4, half, new_half, {p: first_channels for p in ("b1", "b2", 1, 2, 3)})
    assert order["b1"] != list(range(new_half))  # the routes, not the first channels, decide what stays
    blocks = model.stage2
    producers = {"b1": blocks[0].branch1[3], "b2": blocks[0].branch2[6], **{k: blocks[k].branch2[6] for k in (1, 2, 3)}}
    with torch.no_grad():
        for producer, bn in producers.items():
            lost = [j for j in range(half) if j not in order[producer]]
            bn.weight[lost] = 0.0
            bn.bias[lost] = 0.0
        widths = Widths(analysis.space.fingerprint, {"stage2.0.branch1.2": new_half})
        pruned = prune(model, widths, x, importance=FirstChannels(), analysis=analysis)
        assert pruned.stage2[3].branch2[0].in_channels == new_half
        torch.testing.assert_close(pruned(x), model(x), rtol=0, atol=1e-6)


def test_swin_is_analysed_whole_with_stage_and_mlp_widths():
    model, x, analysis, variants = case("swin_t")
    assert not analysis.notes and len(analysis.scopes) == 1  # no fallback, so within the time bound
    streams = {g.name: (g.width, g.divisor) for g in analysis.space if not g.name.endswith("mlp.0")}
    assert streams == {"features.0.0": (96, 3), "features.2.reduction": (192, 6),
                       "features.4.reduction": (384, 12), "features.6.reduction": (768, 24)}
    assert len(analysis.space) == 4 + 12  # and the MLP hidden width of every block
    widths, pruned = variants["uniform"]
    attention = pruned.features[5][0].attn
    assert widths["features.4.reduction"] == 192
    assert attention.qkv.in_features == attention.proj.in_features == attention.proj.out_features == 192
    assert attention.qkv.out_features == 3 * 192  # the inner width follows the stream: 12 heads of 16
    merging = pruned.features[6]
    assert merging.reduction.in_features == 4 * 192 and merging.norm.normalized_shape == (4 * 192,)


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


class GhostLike(nn.Module):
    """GhostNet's pattern: a tensor concatenated with a depthwise copy of itself, added to the stem,
    so stem channel i is tied to stem channel i + 4 (no width of the stem group can be exact)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.primary = nn.Conv2d(8, 4, 1)
        self.cheap = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.expand = nn.Conv2d(8, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        s = self.stem(x)
        p = self.primary(s)
        y = torch.cat([p, self.cheap(p)], 1) + s
        return self.head(torch.relu(self.expand(y)).mean((2, 3)))


def test_a_group_whose_channels_are_tied_to_each_other_is_left_at_full_width():
    torch.manual_seed(0)
    model, x = GhostLike().eval(), torch.randn(1, 3, 16, 16)
    analysis = analyse(model, x)
    names = {g.name for g in analysis.space}
    assert "stem" not in names and "expand" in names
    assert any("stem" in note and "coupled to each other" in note for note in analysis.notes), analysis.notes
    widths = analysis.space.random(0)
    pruned = prune(model, widths, x, analysis=analysis)
    assert {g: out_width(pruned.get_submodule(g)) for g in widths.widths} == dict(widths.widths)
    assert pruned.stem.out_channels == 8 and pruned(x).shape == (1, 5)


def test_the_trial_removes_low_and_high_positions_in_a_set_no_half_shift_maps_onto_itself():
    from slimdeploy.analysis import _trial_positions

    for block in range(2, 40):
        drop = block - block // 2
        chosen = _trial_positions(block, drop)
        assert len(chosen) == len(set(chosen)) == drop and 0 in chosen
        assert block == 2 or block - 1 in chosen
        if block % 2 == 0 and block >= 4:
            shifted = {(p + block // 2) % block for p in chosen}
            assert shifted != set(chosen)
