"""CafeNet: the local free zone, min-min's choice, latency bins, and extraction of a locally-free choice."""
from __future__ import annotations

import random

import pytest
import torch

import slimdeploy.supernet.cafenet as cafenet
from slimdeploy.supernet import Supernet
from slimdeploy.supernet.cafenet import CafeNetWeights, LocalFreeSharing, latency_bins, min_loss_keep, minmin_step
from slimdeploy.train import LoopState
from slimdeploy.zoo import build

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (1, 3, 16, 16)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build("slimdeploy.models:cifar_resnet8").eval()
    for m in model.modules():  # trained-looking statistics, so a wrong channel would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return Supernet(model, torch.randn(*SHAPE), align=4)


def _kept(keep):
    return set(torch.nonzero(keep).flatten().tolist())


def test_a_width_keeps_its_base_channels_and_one_free_unit_from_the_zone_around_its_boundary(tiny):
    sharing = LocalFreeSharing(tiny, zone=1)
    name = next(g.name for g in tiny.space if g.width == 16)
    order = tiny.order[name].tolist()
    full = tiny.largest().widths
    # width 8, step 4: base = the 4 most important; free = units [4:8) (prefix) or [8:12) (just past the boundary)
    assert sharing.options(name, 8) == [(0,), (1,)]
    assert _kept(sharing.keep({**full, name: 8}, {name: 0})[name]) == set(order[:8])
    assert _kept(sharing.keep({**full, name: 8}, {name: 1})[name]) == set(order[:4] + order[8:12])
    assert sharing.options(name, 16) == [()]  # full width: no zone, the prefix
    assert _kept(sharing.keep({**full, name: 4}, {name: 1})[name]) == set(order[4:8])  # base empty at one step
    wide = LocalFreeSharing(tiny, zone=2)  # r = 2: two of the four units [0, 16) around 8, prefix first
    assert wide.options(name, 8)[0] == (0, 1) and len(wide.options(name, 8)) == 6
    assert _kept(wide.keep({**full, name: 8}, {name: 5})[name]) == set(order[8:16])
    fixed = LocalFreeSharing(tiny, zone=0)  # fixed prefix sharing, as the plain supernet
    assert fixed.options(name, 8) == [()]
    assert all(torch.equal(fixed.keep({**full, name: 8})[g], k) for g, k in tiny.keep_for({**full, name: 8}).items())


def test_min_min_trains_only_the_lowest_loss_placement(tiny, monkeypatch):
    sharing = LocalFreeSharing(tiny, zone=1)
    bins = {g.name: tiny.choices(g.name) for g in tiny.space}
    x, y = torch.randn(8, *SHAPE[1:]), torch.randint(0, 10, (8,))
    widths = {g: ws[len(ws) // 2] for g, ws in bins.items()}
    keeps = [sharing.keep(widths, sharing.random(widths, random.Random(s))) for s in range(4)]
    with torch.no_grad():
        target = tiny(x)
        losses = []
        for keep in keeps:
            with tiny.active(keep=keep):
                losses.append(float(torch.nn.functional.kl_div(tiny(x).log_softmax(-1), target.log_softmax(-1),
                                                               reduction="batchmean", log_target=True)))
    assert len(set(losses)) > 1  # the placements really differ
    chosen = min_loss_keep(tiny, tiny, keeps, x, target)
    assert all(torch.equal(chosen[g], keeps[losses.index(min(losses))][g]) for g in chosen)

    calls = []  # every loss the step computes, with whether it was trained
    original = cafenet.distillation_loss

    def spy(student, teacher, temperature=4.0):
        loss = original(student, teacher, temperature)
        calls.append((torch.is_grad_enabled(), float(loss.detach())))
        return loss
    monkeypatch.setattr(cafenet, "distillation_loss", spy)
    tiny.train()
    minmin_step(tiny, sharing, bins, n=4, placements=3, seed=0)(tiny, (x, y), LoopState(step=5))
    tiny.zero_grad(set_to_none=True)
    tiny.eval()
    trained = [i for i, (grad, _) in enumerate(calls) if grad]
    assert len(trained) == 3  # narrowest + two sampled widths, one trained placement each
    start = 0
    for i in trained:
        scored = [value for _, value in calls[start:i]]
        if scored:  # a width with one placement only (the narrowest may have no zone) is trained directly
            assert calls[i][1] == pytest.approx(min(scored), rel=1e-5)
        start = i + 1


def test_latency_bins_are_coarse_where_channels_are_cheap_and_fine_where_they_cost():
    choices = {"a": [8, 16, 24, 32], "b": [8, 16, 24, 32]}

    def latency(w):
        return 0.5 + 0.015 * w["a"] + 0.0015 * w["b"]
    # range 1.028 − 0.632 = 0.396, Δ = 0.396 / (1 × 2) = 0.198: a saves 0.12 per step, b 0.012
    assert latency_bins(choices, latency, granularity=1.0) == {"a": [8, 16, 32], "b": [8, 32]}
    assert latency_bins(choices, latency, granularity=100.0)["a"] == [8, 16, 24, 32]


def test_extracting_a_locally_free_choice_keeps_those_channels_and_computes_what_the_supernet_computes(tiny):
    sharing = LocalFreeSharing(tiny, zone=1)
    widths = {g.name: tiny.choices(g.name)[len(tiny.choices(g.name)) // 2] for g in tiny.space}
    placement = {g: len(sharing.options(g, w)) - 1 for g, w in widths.items()}
    keep = sharing.keep(widths, placement)
    assert any(not torch.equal(keep[g], tiny.keep_for(widths)[g]) for g in keep)  # not the prefix
    calibration = [torch.randn(16, *SHAPE[1:]) for _ in range(2)]
    x = torch.randn(4, *SHAPE[1:])
    with tiny.active(keep=keep):
        tiny.recalibrate(calibration)
        tiny.eval()
        with torch.no_grad():
            shared = tiny(x)
    extracted = tiny.extract(keep=keep)
    with torch.no_grad():
        alone = extracted(x)
    assert (shared - alone).abs().max() <= 1e-4 and shared.abs().max() > 1e-2
    name = next(g for g in keep if not torch.equal(keep[g], tiny.keep_for(widths)[g]) and g.endswith("conv1"))
    rows = torch.nonzero(keep[name]).flatten()  # exactly these channels survive, not the first k
    bn = name[:-len("conv1")] + "bn1"
    assert torch.equal(dict(extracted.named_modules())[bn].weight, dict(tiny.model.named_modules())[bn].weight[rows])


def test_cafenet_weights_score_a_width_at_its_best_placement_and_deliver_that_placement(tiny):
    sharing = LocalFreeSharing(tiny, zone=1)
    bins = {g.name: tiny.choices(g.name) for g in tiny.space}
    weights = CafeNetWeights(tiny, sharing, bins, placements=3)
    batches = [(torch.randn(16, *SHAPE[1:]), torch.randint(0, 10, (16,))) for _ in range(2)]
    widths = tiny.smallest().replace(**{g.name: tiny.choices(g.name)[1] for g in tiny.space})
    score = weights.scorer(batches, batches)(widths)
    assert 0.0 <= score <= 1.0 and widths in weights.chosen
    extracted = weights.extract(widths)  # the scored placement, no calibration needed
    counts = {g: int(k.sum()) for g, k in weights.chosen[widths].items()}
    assert counts == dict(widths.widths)
    assert sum(p.numel() for p in extracted.parameters()) < sum(p.numel() for p in tiny.model.parameters())
