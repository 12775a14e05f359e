"""Architecture adapters: widths torch-pruning alone cannot offer, pruned exactly (timm and torchvision models,
random init, small inputs). Swin and ShuffleNetV2 are in test_prune.py with the other torchvision classifiers."""
import pytest
import torch
import torch.nn as nn
import torchvision

from slimdeploy.analysis import analyse
from slimdeploy.importance import FirstChannels
from slimdeploy.outputs import named_tensors
from slimdeploy.prune import prune
from slimdeploy.ranking import channels_to_remove
from slimdeploy.space import Widths
from slimdeploy.modes import set_eval

timm = pytest.importorskip("timm")
from timm.models.resnet import ResNet  # noqa: E402


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def tiny_res2net(cardinality=1):
    from timm.models.res2net import Bottle2neck

    torch.manual_seed(0)
    return set_eval(ResNet(block=Bottle2neck, layers=[1, 2, 1, 1], channels=(16, 32, 64, 128), stem_width=16,
                           base_width=26 if cardinality == 1 else 8, cardinality=cardinality, num_classes=10,
                           block_args=dict(scale=4)))


def tiny_resnest(cardinality=1):
    from timm.models.resnest import ResNestBottleneck

    torch.manual_seed(0)
    return set_eval(ResNet(block=ResNestBottleneck, layers=[1, 1, 1, 1], channels=(16, 32, 64, 128),
                           stem_type="deep", stem_width=8, avg_down=True, base_width=64, cardinality=cardinality,
                           num_classes=10, block_args=dict(radix=2, avd=True, avd_first=False)))


def test_res2net_offers_the_chunk_width_of_every_block():
    model = tiny_res2net()
    x = torch.randn(1, 3, 64, 64)
    analysis = analyse(model, x)
    assert not analysis.notes
    chunks = {g.name: (g.width, g.divisor) for g in analysis.space if g.name.endswith(".conv1") and "layer" in g.name}
    # scale 4 chunks of 6 (layer1) ... 52 (layer4); layer2.1 is a non-first block (chunks added in a chain)
    assert chunks == {"layer1.0.conv1": (24, 4), "layer2.0.conv1": (52, 4), "layer2.1.conv1": (52, 4),
                      "layer3.0.conv1": (104, 4), "layer4.0.conv1": (208, 4)}
    widths = analysis.space.random(7, align=4)
    pruned = prune(model, widths, x, analysis=analysis)
    block = pruned.layer2[1]
    assert block.conv1.out_channels == widths["layer2.1.conv1"] == 4 * block.width
    assert block.convs[0].in_channels == block.convs[1].out_channels == block.width
    assert n_params(pruned) < 0.6 * n_params(model)  # issue 13: timm's Res2Net-50 lost nothing before
    with torch.no_grad():
        assert pruned(x).shape == (1, 10)


def _silence(bn: nn.Module, channels) -> None:
    """Make the channels' activations exactly zero (after a ReLU): weight 0, bias 0."""
    bn.weight[channels] = 0.0
    bn.bias[channels] = 0.0


def _lost_and_pruned(model, x, name, silence):
    """Prune group `name` to half with FirstChannels, after `silence(lost channels)`; (pruned, outputs agree?)."""
    analysis = analyse(model, x)
    group = analysis.space.group(name)
    keep = group.width // 2 // group.divisor * group.divisor
    lost = channels_to_remove(torch.arange(group.width, 0, -1).float(), group.width, keep, group.divisor)
    with torch.no_grad():
        silence(lost)
        pruned = prune(model, Widths(analysis.space.fingerprint, {name: keep}), x, importance=FirstChannels(),
                       analysis=analysis)
        torch.testing.assert_close(pruned(x), model(x), rtol=0, atol=1e-5)
    return pruned, group, keep


@pytest.mark.parametrize("cardinality", [1, 2])
def test_res2net_chained_scales_keep_each_position_on_its_path(cardinality):
    """Silence the chunk positions a non-first block loses: the pruned model computes the same outputs."""
    model = tiny_res2net(cardinality)
    block = model.layer2[1]

    def silence(lost):
        _silence(block.bn1, lost)
        for bn in block.bns[:-1]:  # scale outputs added to the next chunk carry the same positions
            _silence(bn, sorted({c % block.width for c in lost}))

    pruned, _, keep = _lost_and_pruned(model, torch.randn(2, 3, 64, 64), "layer2.1.conv1", silence)
    assert pruned.layer2[1].conv1.out_channels == keep


def test_resnest_split_attention_offers_its_input_and_output_widths():
    torch.manual_seed(0)
    model = set_eval(timm.create_model("resnest14d"))
    x = torch.randn(1, 3, 64, 64)
    analysis = analyse(model, x)
    assert not analysis.notes
    groups = {g.name: (g.width, g.divisor) for g in analysis.space}
    assert groups["layer1.0.conv1"] == (64, 2)  # the bottleneck width: the radix-2 grouped conv's input
    assert groups["layer1.0.conv2"] == (64, 1)  # SplitAttn's output width
    pruned = prune(model, analysis.space.random(7), x, analysis=analysis)
    assert n_params(pruned) < 0.5 * n_params(model)  # issue 13: 3 % before
    with torch.no_grad():
        assert pruned(x).shape == (1, 1000)


@pytest.mark.parametrize("cardinality", [1, 2])
def test_split_attention_output_pruning_keeps_the_radix_and_cardinal_layout(cardinality):
    """Silence the SplitAttn outputs that will go: the pruned model must compute the same outputs."""
    model = tiny_resnest(cardinality)
    attn = model.layer2[0].conv2
    width = attn.conv.out_channels // attn.radix

    def silence(lost):
        _silence(attn.bn0, [r * width + c for r in range(attn.radix) for c in lost])

    pruned, group, keep = _lost_and_pruned(model, torch.randn(2, 3, 64, 64), "layer2.0.conv2", silence)
    assert group.divisor == cardinality and pruned.layer2[0].conv3.in_channels == keep


def test_fastvit_offers_its_mlp_widths_past_the_grouped_downsampling():
    torch.manual_seed(0)
    model = set_eval(timm.create_model("fastvit_t8"))
    x = torch.randn(1, 3, 64, 64)
    analysis = analyse(model, x)
    names = {g.name for g in analysis.space}
    # every block's MLP; the stage widths stay: each feeds a grouped conv with one input channel per group
    assert {f"stages.{s}.blocks.{b}.mlp.fc1" for s, n in enumerate((2, 2, 4, 2)) for b in range(n)} <= names
    assert not any("large_conv" in layer for g in analysis.space for layer in g.layers)
    assert "stages.1.downsample.proj.0.large_conv.conv (feeds a grouped convolution side with one channel" \
        in analysis.notes[0]
    pruned = prune(model, analysis.space.random(7), x, analysis=analysis)
    assert n_params(pruned) < 0.85 * n_params(model)  # issue 13: 0.6 % before
    with torch.no_grad():
        assert pruned(x).shape == (1, 1000)


def test_timm_vit_attention_is_one_layer_so_the_stream_width_is_offered_within_the_bound():
    torch.manual_seed(0)
    model = set_eval(timm.create_model("vit_tiny_patch16_224"))
    x = torch.randn(1, 3, 224, 224)
    analysis = analyse(model, x)
    assert not analysis.notes and len(analysis.scopes) == 1  # it ran past 60 s and fell back before
    groups = {g.name: g.width for g in analysis.space}
    assert groups == {"patch_embed.proj": 192, **{f"blocks.{i}.mlp.fc1": 768 for i in range(12)}}
    pruned = prune(model, analysis.space.uniform(0.5), x, analysis=analysis)
    attention = pruned.blocks[3].attn
    assert (attention.qkv.in_features, attention.proj.out_features) == (96, 96)
    assert (attention.qkv.out_features, attention.num_heads) == (3 * 192, 3)  # heads and inner width stay
    with torch.no_grad():
        assert pruned(x).shape == (1, 1000)


def test_timm_swin_window_attention_and_patch_merging_are_layers_so_stage_widths_are_offered():
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = set_eval(SwinTransformer(img_size=64, patch_size=4, window_size=4, embed_dim=32, depths=(1, 1, 1),
                                     num_heads=(1, 2, 4), num_classes=10))
    x = torch.randn(1, 3, 64, 64)
    analysis = analyse(model, x)
    assert not analysis.notes and len(analysis.scopes) == 1  # the zoo: relative position bias pruned to 0 heads
    widths = analysis.space.uniform(0.5)
    pruned = prune(model, widths, x, analysis=analysis)
    stage = pruned.layers[1]
    attention = stage.blocks[0].attn
    assert attention.qkv.in_features == attention.proj.out_features == stage.downsample.reduction.out_features
    assert attention.qkv.in_features < 64 and attention.relative_position_bias_table.shape[1] == 2  # heads stay
    assert stage.downsample.reduction.in_features == 4 * pruned.layers[0].blocks[0].attn.proj.out_features
    with torch.no_grad():
        assert pruned(x).shape == (1, 10)


def test_efficient_channel_attention_passes_its_channels_through():
    from timm.layers import EcaModule

    torch.manual_seed(0)
    model = set_eval(nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), EcaModule(32),
                                   nn.Conv2d(32, 16, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                   nn.Linear(16, 10)))
    x = torch.randn(1, 3, 16, 16)
    analysis = analyse(model, x)
    assert {g.name: g.width for g in analysis.space} == {"0": 32, "4": 16} and not analysis.notes
    pruned = prune(model, analysis.space.random(3), x, analysis=analysis)
    assert pruned[4].in_channels == pruned[0].out_channels < 32  # the gate's conv runs across any channel count
    with torch.no_grad():
        assert pruned(x).shape == (1, 10)


class _CachedBias(nn.Module):
    """Like timm's LeViT and EfficientFormer: `train()` returns None and eval mode caches a derived tensor."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.bias = nn.Parameter(torch.randn(32))
        self.attention_bias_cache = {}
        self.head = nn.Linear(32, 10)

    @torch.no_grad()
    def train(self, mode=True):
        super().train(mode)
        if mode:
            self.attention_bias_cache = {}

    def _bias(self):
        if self.training:
            return self.bias
        if "cpu" not in self.attention_bias_cache:
            self.attention_bias_cache["cpu"] = self.bias * 1.0
        return self.attention_bias_cache["cpu"]

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)) + self._bias())


def test_models_whose_train_returns_none_are_analysed_pruned_and_exported(tmp_path):
    from slimdeploy.export import export_onnx, verify_onnx
    from slimdeploy.inspection import inspect

    torch.manual_seed(0)
    model = _CachedBias()
    assert model.eval() is None
    x = torch.randn(1, 3, 16, 16)
    analysis = analyse(model, x)
    assert sorted(g.name for g in analysis.space) == ["features.0", "features.3"] and not analysis.notes
    pruned = prune(model, analysis.space.uniform(0.5), x, analysis=analysis)
    assert pruned.features[0].out_channels == 8 and pruned.bias.shape == (16,) and not pruned.training
    report = verify_onnx(pruned, export_onnx(pruned, x, tmp_path / "m.onnx"), x, isolated=False)
    assert report.passed, report.summary()
    assert {g["name"]: g["width"] for g in inspect(model, x, analysis=analysis)["groups"]}["features.0"] == 16


def _detector(name: str):
    torch.manual_seed(0)
    model = set_eval(torchvision.models.get_model(name, weights=None, weights_backbone=None))
    x = torch.randn(1, 3, 320, 320)
    return model, x, analyse(model, x)


def test_detection_backbone_neck_and_heads_are_pruned_with_post_processing_in_place():
    model, x, analysis = _detector("ssdlite320_mobilenet_v3_large")
    assert not analysis.notes and len(analysis.scopes) == 1  # the trunk at once, not the backbone alone
    layers = {layer for g in analysis.space for layer in g.layers}
    assert any(layer.startswith("head.classification_head") for layer in layers)
    assert any(layer.startswith("backbone.extra") for layer in layers)
    pruned = prune(model, analysis.space.random(7), x, analysis=analysis)
    assert n_params(pruned) < 0.7 * n_params(model)
    with torch.no_grad():
        detections = pruned(x)
    assert [name for name, _ in named_tensors(detections)] == ["output.0.boxes", "output.0.scores", "output.0.labels"]
    assert detections[0]["boxes"].shape[1] == 4


def test_faster_rcnn_rpn_and_box_head_widths_are_offered():
    model, x, analysis = _detector("fasterrcnn_mobilenet_v3_large_320_fpn")
    names = {g.name for g in analysis.space}
    assert {"roi_heads.box_head.fc6", "roi_heads.box_head.fc7", "rpn.head.conv.0.0"} <= names
    widths = analysis.space.uniform(0.5)
    pruned = prune(model, widths, x, analysis=analysis)
    assert pruned.roi_heads.box_head.fc6.out_features == pruned.roi_heads.box_predictor.cls_score.in_features // 2 * 2
    assert pruned.roi_heads.box_head.fc6.out_features == widths["roi_heads.box_head.fc6"] == 512
    with torch.no_grad():
        assert set(pruned(x)[0]) == {"boxes", "labels", "scores"}
