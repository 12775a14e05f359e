"""Adaptive width: the distribution, widths moving with the optimizer state kept, truncation = pruning, the method end to end."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torchvision

from slimdeploy.adaptive import AdaptiveWidth, importance, pmf, quantile_width, rate_for_width
from slimdeploy.adaptive.store import load_adaptive
from slimdeploy.adaptive.training import AdaptiveTraining, adaptive_step, train_adaptive
from slimdeploy.channels import ChannelMap
from slimdeploy.costs import CostModel
from slimdeploy.data import load_dataset, make_loader
from slimdeploy.errors import SlimdeployError
from slimdeploy.search import LATENCY, SearchProblem, get_searcher
from slimdeploy.tomlio import tomllib
from slimdeploy.train import LoopState, accuracy, train_classifier
from slimdeploy.zoo import build

SMALL = "slimdeploy.models:cifar_resnet8"
SHAPE = (1, 3, 16, 16)
QUIET_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the distribution ----------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.5, 0.02, 0.0005])
def test_the_discretized_exponential_sums_to_one_and_its_importance_is_normalized_and_decreasing(lam):
    lam = torch.tensor(lam, dtype=torch.float64)
    assert float(pmf(lam, 200_000).sum()) == pytest.approx(1.0, abs=1e-9)
    width = quantile_width(float(lam))
    f = importance(lam, width, width + 5)
    assert float(f.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((f[:width].diff() < 0).all()) and bool((f[width:] == 0).all())


def test_the_width_is_the_quantile_formula_and_holds_the_quantile_of_the_mass():
    assert [quantile_width(lam) for lam in (0.02, 0.01)] == [117, 232]  # ALGORITHMS.md §4's examples
    assert quantile_width(0.0005) == math.floor(math.log(10) / 0.0005) + 2
    for lam in (0.7, 0.13, 0.031, 0.004):
        for k in (0.5, 0.9, 0.99):
            d = quantile_width(lam, k)
            assert d == math.floor(math.log(1 / (1 - k)) / lam) + 2
            mass = pmf(torch.tensor(lam, dtype=torch.float64), d).cumsum(0)
            assert mass[d - 2] >= k - 1e-12 and (d < 3 or mass[d - 3] <= k + 1e-12)  # D−1 positions hold k
    assert all(quantile_width(rate_for_width(w)) == w for w in range(3, 600))


def test_importance_gives_the_rate_a_gradient():
    lam = torch.tensor(0.1, requires_grad=True)
    (importance(lam, 20, 30)[:5].sum()).backward()
    assert lam.grad > 0  # a larger rate puts more mass on the first positions


# -- truncation is physical pruning ----------------------------------------------------------------
def _trained_looking(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


class ConvMLP(nn.Module):
    """Convolution channels feeding a flattened two-layer MLP head (linear features as groups)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(4))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(),
                                  nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.features(x))


def small_vit():
    model = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=4,
                                                 hidden_dim=32, mlp_dim=64, num_classes=10)
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


@pytest.mark.parametrize("name, build_model", [
    ("cifar resnet-8 (residual groups)", lambda: build(SMALL)), ("conv + MLP head (linear features)", ConvMLP),
    ("mobilenet_v2 (depthwise)", lambda: torchvision.models.mobilenet_v2(width_mult=0.25)),
    ("vit (layer norm, attention)", small_vit)])
def test_a_truncated_network_computes_what_its_physically_pruned_extraction_computes(name, build_model):
    torch.manual_seed(0)
    model = _trained_looking(build_model())
    x = torch.randn(4, 3, 16, 16)
    net = AdaptiveWidth(model, x[:1], min_fraction=0.1)
    with torch.no_grad():  # learned widths below full, and the importance not flat
        net.rho.add_(torch.rand(len(net.plans)) * 1.5)
    net.update_widths()
    adaptive = [p for p in net.plans if p.adaptive]
    assert adaptive and any(net.learned_widths()[p.name] < p.channels for p in adaptive), name
    with torch.no_grad():
        assert (net.eval()(x) - net.model(x)).abs().max() > 1e-3  # the importance scales the consumers
    calibration = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    for quantile in (0.9, 0.6):
        widths = net.truncated(quantile)
        with torch.no_grad(), net.active(widths):
            net.recalibrate(calibration)
            net.eval()
            shared = net(x)
        extracted = net.extract(widths)
        with torch.no_grad():
            alone = extracted(x)
        assert (shared - alone).abs().max() <= 1e-4 * max(1.0, float(shared.abs().max())), (name, quantile)
        assert sum(p.numel() for p in extracted.parameters()) < sum(p.numel() for p in model.parameters())
    weights = {n: p.detach().clone() for n, p in net.model.named_parameters()}
    net.extract(net.truncated(0.5))
    assert all(torch.equal(p, weights[n]) for n, p in net.model.named_parameters())  # folding is undone


# -- widths move, the optimizer state stays consistent ---------------------------------------------
def _batches(n: int = 4, size: int = 16):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, *SHAPE[1:], generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)]


def _dropped_positions(net: AdaptiveWidth, name: str, lo: int, hi: int):
    """(parameter, dim, positions) of every slice of the channels ranked lo..hi−1 in group `name`."""
    moved = torch.zeros(net.space.group(name).width, dtype=torch.bool)
    moved[net.order[name][lo:hi]] = True
    return [(s.param, s.dim, s.positions[moved[s.channels]]) for s in net.channels.groups[name].slots]


@pytest.mark.parametrize("optimizer_kind", ["sgd", "adam"])
def test_shrinking_and_growing_a_width_resets_only_the_moved_channels_optimizer_state(optimizer_kind):
    torch.manual_seed(0)
    net = AdaptiveWidth(_trained_looking(build(SMALL)), torch.randn(*SHAPE))
    net.rho.requires_grad_(False)  # widths move only when this test moves them
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), "adam": lambda p: torch.optim.Adam(p, lr=1e-3)}
    optimizer = make[optimizer_kind](net.parameters())
    step = adaptive_step(net, AdaptiveTraining(), n_train=1000)
    state = LoopState()
    net.train()

    def train(batches):
        for batch in batches:
            optimizer.zero_grad()
            step(net, batch, state)
            optimizer.step()

    train(_batches(2))
    name = "layers.2.conv1"
    plan = next(p for p in net.plans if p.name == name)
    i = net.plans.index(plan)
    params = dict(net.model.named_parameters())
    before = {n: {k: v.clone() for k, v in optimizer.state[p].items() if torch.is_tensor(v) and v.ndim}
              for n, p in params.items()}
    with torch.no_grad():
        net.rho[i] = math.log(math.expm1(rate_for_width(40)))
    assert net.update_widths(optimizer) == {name: (64, 40)}
    dropped = _dropped_positions(net, name, 40, 64)
    for param, dim, positions in dropped:
        for key, value in optimizer.state[params[param]].items():
            if torch.is_tensor(value) and value.ndim:
                assert bool((value.index_select(dim, positions) == 0).all()), (param, key)
                kept = torch.ones(value.shape[dim], dtype=torch.bool)
                kept[positions] = False
                old = before[param][key].index_select(dim, torch.nonzero(kept).flatten())
                assert torch.equal(value.index_select(dim, torch.nonzero(kept).flatten()), old)
    assert any(bool((before[p][k].index_select(d, pos) != 0).any()) for p, d, pos in dropped for k in before[p])
    untouched = next(n for n in params if n.startswith("layers.0.conv1"))
    assert all(torch.equal(v, before[untouched][k]) for k, v in optimizer.state[params[untouched]].items()
               if torch.is_tensor(v) and v.ndim)

    at_drop = {p: params[p].detach().index_select(d, pos).clone() for p, d, pos in dropped}
    kept_weight = params[f"{name}.weight"].detach().clone()
    train(_batches(2))
    for param, dim, positions in dropped:  # masked channels neither learn nor decay
        assert torch.equal(params[param].detach().index_select(dim, positions), at_drop[param])
    assert not torch.equal(params[f"{name}.weight"].detach(), kept_weight)

    with torch.no_grad():
        net.rho[i] = net.rho_bounds[0, i]
    assert net.update_widths(optimizer) == {name: (40, 64)}
    for param, dim, positions in dropped:  # they come back as they left, with a fresh optimizer state
        assert torch.equal(params[param].detach().index_select(dim, positions), at_drop[param])
        for value in optimizer.state[params[param]].values():
            if torch.is_tensor(value) and value.ndim:
                assert bool((value.index_select(dim, positions) == 0).all())


def test_dropping_the_least_important_channel_changes_the_output_far_less_than_dropping_the_most_important():
    torch.manual_seed(0)
    net = AdaptiveWidth(_trained_looking(build(SMALL)), torch.randn(*SHAPE)).eval()
    x = torch.randn(32, *SHAPE[1:])
    name = "layers.2.conv1"
    with torch.no_grad():
        full = net(x)
        last = net.keep_for(net.learned_widths())
        last[name][net.order[name][-1]] = False
        first = net.keep_for(net.learned_widths())
        first[name][net.order[name][0]] = False
        with net.active(keep=last):
            tail = (net(x) - full).norm() / full.norm()
        with net.active(keep=first):
            head = (net(x) - full).norm() / full.norm()
    assert tail < head / 3, (float(tail), float(head))


# -- training ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    train, val, _ = load_dataset("digits", input_shape=SHAPE)
    model = build(SMALL)
    train_classifier(model, make_loader(train, 64, shuffle=True), epochs=2, lr=0.05)
    return model.eval(), train, list(make_loader(val, 256))


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """A ResNet-8 trained on digits, wrapped at 40% width, then trained with adaptive width (saved)."""
    model, train, val = digits
    net = AdaptiveWidth(model, torch.randn(*SHAPE), init_width=0.4)
    start = net.width_fraction()
    out = tmp_path_factory.mktemp("adaptive")
    result = train_adaptive(net, train, AdaptiveTraining(epochs=2, lr=0.02, init_width=0.4, checkpoint_every=10),
                            out=out, teacher=model, say=lambda text: None)
    return net, out, result, start


def test_widths_grow_where_the_task_needs_them_and_the_network_learns(trained, digits):
    net, _, result, start = trained
    _, _, val = digits
    assert start < 0.5 and net.width_fraction() > start + 0.2, (start, net.width_fraction())
    assert [h["width_fraction"] for h in result["history"]] == sorted(h["width_fraction"] for h in result["history"])
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]
    assert accuracy(net, val) > 0.9


def test_a_prior_on_the_rates_shrinks_the_widths(digits):
    model, train, _ = digits
    net = AdaptiveWidth(model, torch.randn(*SHAPE), min_fraction=0.1)
    config = AdaptiveTraining(epochs=1, lr=0.02, rate_prior_mean=0.5, rate_prior_std=0.01)
    train_adaptive(net, torch.utils.data.Subset(train, range(640)), config, teacher=model, say=lambda text: None)
    assert net.width_fraction() < 0.6
    assert all(w < net.space.group(n).width for n, w in net.learned_widths().items())


def test_an_interrupted_training_resumed_ends_with_the_weights_of_an_uninterrupted_run(digits, tmp_path):
    model, train, _ = digits
    subset = torch.utils.data.Subset(train, range(320))
    config = AdaptiveTraining(epochs=2, lr=0.02, init_width=0.5, checkpoint_every=3)

    def fresh():
        return AdaptiveWidth(model, torch.randn(*SHAPE), init_width=0.5)

    whole = fresh()
    train_adaptive(whole, subset, config, out=tmp_path / "whole", teacher=model, say=lambda text: None)

    class Stop(Exception):
        pass

    from slimdeploy.adaptive import training

    original = training._Checkpoints.on_step

    def stop_after_step_6(self, loop, record):
        original(self, loop, record)
        if loop.state.step == 7:  # one step past the checkpoint at step 6: that step is lost
            raise Stop

    training._Checkpoints.on_step = stop_after_step_6
    try:
        with pytest.raises(Stop):
            train_adaptive(fresh(), subset, config, out=tmp_path / "cut", teacher=model, say=lambda text: None)
    finally:
        training._Checkpoints.on_step = original
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["loop"]["step"] == 6
    resumed = fresh()
    train_adaptive(resumed, subset, config, out=tmp_path / "cut", resume=True, teacher=model, say=lambda text: None)
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SlimdeployError, match="other settings"):
        train_adaptive(fresh(), subset, AdaptiveTraining(epochs=2, lr=0.05, init_width=0.5), out=tmp_path / "cut",
                       resume=True, say=lambda text: None)


def test_a_saved_network_loads_back_without_pickle_and_truncates_the_same(trained, tmp_path):
    import shutil

    net, out, _, _ = trained
    assert {p.name for p in out.iterdir()} == {"adaptive.json", "checkpoint.pt", "weights.pt"}
    manifest = json.loads((out / "adaptive.json").read_text())
    assert manifest["format"] == "slimdeploy.adaptive/1" and manifest["learned_widths"] == net.learned_widths()
    again = load_adaptive(out)
    x = torch.randn(8, *SHAPE[1:])
    widths = net.truncated(0.7)
    with torch.no_grad(), net.active(widths), again.active(widths):
        assert torch.equal(net.eval()(x), again(x))
    damaged = shutil.copytree(out, tmp_path / "damaged")
    (damaged / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SlimdeployError, match="damaged or not a slimdeploy file"):
        load_adaptive(damaged)


# -- the searcher --------------------------------------------------------------------------------
def test_the_search_takes_the_widest_path_point_within_the_budget_then_fills_the_slack(trained, digits):
    net, _, _, _ = trained
    model, train, val = digits
    x = torch.randn(*SHAPE)
    cost = CostModel.build(net.model, x, ChannelMap.build(net.model, net.analysis))
    full = cost.counts(net.space.full())[0]
    costs = {LATENCY: lambda w: cost.counts(w)[0] / full}  # MACs stand in for latency here
    calibration = [b for _, b in zip(range(2), make_loader(train, 64, shuffle=True, seed=1))]
    score = net.scorer(calibration, val[:1])

    def problem(limit=0.5, shared=net):
        return SearchProblem(net.space, costs, {LATENCY: limit}, score, shared=shared)

    path_only = get_searcher("adaptive", points=6, fill=False)
    on_path = path_only.search(problem())
    assert on_path.latency_ratio <= 0.5
    t = next(h["t"] for h in on_path.history if h["widths"] == dict(on_path.widths.widths))
    wider = path_only.widths_at(problem(), net, min(1.0, t + 2 ** -path_only.steps))
    assert wider == on_path.widths or problem().latency(wider) > 0.5  # the widest path point within the budget
    curve = sorted(on_path.history, key=lambda h: h[LATENCY])
    assert len(curve) >= 5 and curve[-1]["t"] == 1.0
    assert [h["t"] for h in curve] == sorted(h["t"] for h in curve)  # nested: truncating lowers the cost
    assert curve[-1]["score"] > 0.9 and on_path.score > 0.5

    filled = get_searcher("adaptive", points=6).search(problem())
    top = path_only.widths_at(problem(), net, 1.0)
    assert on_path.latency_ratio <= filled.latency_ratio <= 0.5
    for g in net.space:
        assert on_path.widths[g.name] <= filled.widths[g.name] <= top[g.name]
        wider = next((c for c in problem().choices(g.name) if c > filled.widths[g.name]), None)
        if wider is not None and wider <= top[g.name]:  # no group can take another step within the budget
            assert problem().latency(filled.widths.replace(**{g.name: wider})) > 0.5
    assert filled.widths == on_path.widths or any("slack filled" in n for n in filled.notes)

    loose = path_only.search(problem(1.0))
    assert loose.widths == top and "already meet" in " ".join(loose.notes)
    with pytest.raises(SlimdeployError, match="adaptive-width network"):
        path_only.search(problem(shared=None))


def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "slimdeploy", *args], capture_output=True, text=True,
                          env=QUIET_ENV, timeout=timeout)


def test_search_then_compress_with_adaptive_width_from_the_command_line(tmp_path):
    """`search` trains the network and writes the truncation curve; `compress` delivers a budget from it."""
    wide, shape, searched = "slimdeploy.models:cifar_resnet8_wide", "1,3,16,16", tmp_path / "s"
    refused = _cli("search", wide, "--input-shape", shape, "--data", "digits", "--method", "adaptive",
                   "--latency", "0.5x", "--search-option", "quantile=1.5", "--out", str(searched))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "quantile" in refused.stderr
    assert not searched.exists()
    done = _cli("search", wide, "--input-shape", shape, "--data", "digits", "--method", "adaptive", "--epochs", "1",
                "--latency", "0.5x,0.8x", "--search-option", "points=5", "--samples", "8", "--threads", "1",
                "--out", str(searched), "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"widths-0.5x.json", "widths-0.8x.json", "truncation.json", "truncation.png", "front.json",
            "config.toml"} <= \
        {p.name for p in searched.iterdir()}
    assert {p.name for p in (searched / "adaptive").iterdir()} == {"adaptive.json", "weights.pt", "checkpoint.pt"}
    assert (searched / "truncation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = tomllib.loads((searched / "config.toml").read_text())  # the options in effect: --config repeats it
    assert (config["method"], config["latency"], config["search-option"]) == ("adaptive", "0.5x,0.8x", ["points=5"])
    curve = json.loads((searched / "truncation.json").read_text())
    assert len(curve["curve"]) >= 5 and all({"latency", "macs", "score", "widths"} <= set(h) for h in curve["curve"])
    assert curve["chosen"]["0.5x"]["costs"]["latency"] <= 0.5 and curve["chosen"]["0.8x"]["costs"]["latency"] <= 0.8

    out = tmp_path / "c"
    # the delivered model is measured against the budget; a busy CI machine may need more re-searches than 2
    done = _cli("compress", wide, "--input-shape", shape, "--data", "digits", "--method", "adaptive",
                "--supernet", str(searched / "adaptive"), "--latency", "0.5x", "--samples", "8", "--threads", "1",
                "--finetune-epochs", "1", "--retries", "5", "--search-option", "points=4", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["method"] == "adaptive" and report["latency_ms"]["ratio"] <= 0.5
    assert report["verification"]["passed"] and report["accuracy"]["compressed"] > 0.3  # random-init spec
    shared = report["search"]["supernet"]
    assert shared["kind"] == "adaptive width" and shared["training"]["steps"] > 0
    assert shared["learned_widths"] == json.loads((searched / "adaptive" / "adaptive.json").read_text())[
        "learned_widths"]
    assert report["search"]["history"] and all("score" in h for h in report["search"]["history"])
    assert report["search"]["predicted"]["latency"] <= 0.5 and (out / "model.onnx").exists()
