"""Width Transfer: the --proxy spec, stages found from the module tree, proxies, projection and its scale."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from slimdeploy.analysis import analyse
from slimdeploy.channels import ChannelMap
from slimdeploy.costs import CostModel
from slimdeploy.errors import SlimdeployError
from slimdeploy.models import CifarResNet
from slimdeploy.search import LATENCY, SearchProblem
from slimdeploy.space import Widths
from slimdeploy.transfer import parse_proxy
from slimdeploy.transfer.layout import Layout
from slimdeploy.transfer.projection import Projection, Unmappable, fit_scale
from slimdeploy.transfer.proxy import build_proxy
from slimdeploy.zoo import build

pytestmark = pytest.mark.usefixtures("one_torch_thread")
X16 = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def laid_out(model, x=X16):
    model.eval()
    analysis = analyse(model, x)
    return analysis, Layout.of(model, x, analysis.space)


def test_a_proxy_spec_is_parsed_to_its_canonical_form_and_mistakes_name_the_fix():
    spec = parse_proxy(" width=0.5, depth=min,resolution=0.5 ,data=0.2")
    assert (spec.width, spec.depth, spec.resolution, spec.data, spec.stack, spec.cost) == \
        (0.5, 1, 0.5, 0.2, "last", "target")
    assert parse_proxy(spec.text()) == spec and spec.size(28, 28) == (14, 14)
    assert parse_proxy("resolution=32px,stack=average,cost=proxy").size(64, 64) == (32, 32)
    with pytest.raises(SlimdeployError, match="no key 'speed'; known keys: width, depth, resolution, data, epochs"):
        parse_proxy("width=0.5,speed=2")
    for bad, message in [("width=1.5", "width='1.5' must be a fraction in"), ("depth=0", "min or a positive"),
                         ("stack=first", "choose one of last, average, interpolate"), ("width", "key=value"),
                         ("width=0.5,width=0.4", "gives width twice"), ("width=1,data=1", "must make the search"),
                         ("epochs=two", "positive number of epochs")]:
        with pytest.raises(SlimdeployError, match=message):
            parse_proxy(bad)


@pytest.mark.parametrize("spec, shape, blocks", [
    ("slimdeploy.models:cifar_resnet20", (1, 3, 16, 16), [3, 3, 3]),
    ("torchvision:resnet18", (1, 3, 32, 32), [2, 2, 2, 2]),
    ("torchvision:mobilenet_v2", (1, 3, 32, 32), [1, 1, 2, 3, 4, 3, 3, 1, 1]),
    ("torchvision:efficientnet_b0", (1, 3, 32, 32), [1, 1, 2, 2, 3, 3, 4, 1, 1]),  # stages nested in Sequentials
])
def test_stages_are_found_from_the_module_tree_and_tied_widths_sit_in_a_stage_first_block(spec, shape, blocks):
    torch.manual_seed(0)
    _, layout = laid_out(build(spec), torch.randn(*shape))
    assert [len(s.blocks) for s in layout.stages] == blocks
    assert all(s.preserving[1:] == (True,) * (len(s.blocks) - 1) for s in layout.stages)
    if spec.endswith("resnet20"):
        p = layout.positions
        assert str(p["layers.4.conv1"]) == "stage 1 block 1 conv1" and str(p["layers.3.conv2"]) == "stage 1 block 0 conv2"
        assert p["stem.0"].outside  # stage 0's residual width is tied to the stem


def test_a_shallower_narrower_lower_resolution_proxy_keeps_the_first_blocks_and_matches_every_group():
    target = CifarResNet(3, 16).eval()
    analysis, layout = laid_out(target, torch.randn(1, 3, 28, 28))
    proxy = build_proxy(target, torch.randn(1, 3, 28, 28), parse_proxy("width=0.5,depth=min,resolution=0.5"), layout,
                        align=8)
    assert [len(s.blocks) for s in proxy.layout.stages] == [1, 1, 1] and tuple(proxy.example.shape) == (1, 3, 14, 14)
    assert proxy.align == 4 and {g.name: g.width for g in proxy.analysis.space}["layers.6.conv1"] == 32
    projection = Projection.match(analysis.space, layout, proxy.analysis.space, proxy.layout, "last")
    assert projection.rules["layers.8.conv1"] == "stack-last" and projection.sources["layers.8.conv1"] == \
        [("layers.6.conv1", 1.0)]
    assert projection.rules["layers.3.conv2"] == "same position" and projection.rules["stem.0"] == "same layer"
    assert proxy.model(proxy.example).shape == (1, 10)


def multipliers_of(projection, proxy_space, values):
    widths = Widths(proxy_space.fingerprint, {g.name: round(values[g.name] * g.width) for g in proxy_space})
    return projection.multipliers(widths)


def test_deeper_targets_are_filled_by_stack_last_stack_average_or_interpolation():
    target_a, target = laid_out(CifarResNet(3, 16))
    proxy_a, proxy = laid_out(CifarResNet(2, 8))  # hand-built: another depth and width
    m = {g.name: 1.0 for g in proxy_a.space}
    m.update({"layers.0.conv1": 0.25, "layers.1.conv1": 0.75, "layers.4.conv1": 0.5, "layers.5.conv1": 1.0})
    got = {rule: multipliers_of(Projection.match(target_a.space, target, proxy_a.space, proxy, rule), proxy_a.space, m)
           for rule in ("last", "average", "interpolate")}
    # blocks present in both map one to one; the third block copies the last, or averages the stage
    assert got["last"]["layers.0.conv1"] == got["average"]["layers.0.conv1"] == 0.25
    assert got["last"]["layers.2.conv1"] == 0.75 and got["average"]["layers.2.conv1"] == 0.5
    assert got["last"]["layers.8.conv1"] == 1.0 and got["average"]["layers.8.conv1"] == 0.75
    # interpolation reads the proxy at the target block's relative depth: block 1 of 3 sits between 0 and 1
    assert got["interpolate"]["layers.1.conv1"] == pytest.approx(0.5)
    assert got["interpolate"]["layers.2.conv1"] == pytest.approx(0.75)
    # a shallower target averages the proxy blocks its block covers
    shallow_a, shallow = laid_out(CifarResNet(1, 16))
    down = multipliers_of(Projection.match(shallow_a.space, shallow, proxy_a.space, proxy), proxy_a.space, m)
    assert down["layers.0.conv1"] == pytest.approx(0.5) and down["layers.2.conv1"] == pytest.approx(0.75)


def test_a_model_whose_structure_cannot_be_matched_names_the_groups_it_could_not_map():
    target_a, target = laid_out(CifarResNet(2, 16))
    torch.manual_seed(0)
    other = build("torchvision:resnet18")
    other_a, other_layout = laid_out(other, torch.randn(1, 3, 32, 32))
    with pytest.raises(Unmappable, match=r"cannot map 9 channel group\(s\).*stem\.0 \(stem\.0\).*layers\.0\.conv1 "
                                         r"\(stage 0 block 0 conv1\).* and 1 more") as caught:
        Projection.match(target_a.space, target, other_a.space, other_layout)
    assert "layers.2.conv2" in caught.value.groups and "stem.0" in caught.value.groups


def test_the_global_scale_is_the_largest_that_meets_the_target_budget():
    model = CifarResNet(2, 16).eval()
    analysis, layout = laid_out(model)
    counts = CostModel.build(model, X16, ChannelMap.build(model, analysis))
    full = counts.counts(analysis.space.full())[0]
    problem = SearchProblem(analysis.space, {LATENCY: lambda w: counts.counts(w)[0] / full}, {LATENCY: 0.45},
                            lambda w: 0.0, align=4, min_fraction=0.2)
    projection = Projection.match(analysis.space, layout, analysis.space, layout)
    m = {g.name: (0.5 if "conv1" in g.name else 1.0) for g in analysis.space}  # mids narrower than stage widths
    scale, widths = fit_scale(projection, m, problem)
    assert problem.meets(widths) and widths == projection.widths(m, scale, problem.choices)
    assert not problem.meets(projection.widths(m, scale * 1.02, problem.choices))  # any more misses the budget
    # relative widths survive: every mid width is at most its stage width's share
    for g in analysis.space:
        if "conv1" in g.name:
            assert widths[g.name] / g.width <= min(widths[o.name] / o.width for o in analysis.space
                                                   if "conv1" not in o.name)
    tight = SearchProblem(analysis.space, problem.costs, {LATENCY: 0.01}, lambda w: 0.0, align=4)
    with pytest.raises(SlimdeployError, match="latency budget cannot be met"):
        fit_scale(projection, m, tight)


def test_depth_needs_a_stage_that_repeats_a_block_and_a_too_small_resolution_is_refused():
    model = CifarResNet(1, 16).eval()
    _, layout = laid_out(model)
    with pytest.raises(SlimdeployError, match=r"depth=1: no stage of this model has more than 1 block.*found: 1, 1, 1"):
        build_proxy(model, X16, parse_proxy("depth=min"), layout)
    flat = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10)).eval()
    flat_a, flat_layout = laid_out(flat)
    with pytest.raises(SlimdeployError, match=r"does not run on an input of shape \(1, 3, 8, 8\).*larger resolution"):
        build_proxy(flat, X16, parse_proxy("resolution=0.5"), flat_layout)


def run_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "slimdeploy", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_bad_proxy_on_the_command_line_is_one_line_exit_2_and_nothing_written(tmp_path):
    done = run_cli("compress", "slimdeploy.models:cifar_resnet8", "--input-shape", "1,3,16,16", "--latency", "0.5x",
                   "--proxy", "width=0.5,speed=2", "--out", str(tmp_path / "c"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--proxy has no key 'speed'; known keys: width, depth, resolution, data, epochs, stack, cost" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_compress_with_evolution_on_a_proxy_delivers_projected_widths_from_the_command_line(tmp_path):
    out = tmp_path / "c"
    done = run_cli("compress", "slimdeploy.models:cifar_resnet8_wide", "--input-shape", "1,3,16,16", "--data", "digits",
                   "--method", "evolution", "--proxy", "width=0.5,data=0.3", "--latency", "0.5x", "--search-option",
                   "population=6", "--search-option", "generations=1", "--samples", "8", "--threads", "1",
                   "--retries", "5", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    transfer = json.loads((out / "transfer.json").read_text())
    assert report["latency_ms"]["ratio"] <= 0.5 and report["verification"]["passed"]
    assert report["method"] == "evolution" and "on the proxy (width=0.5,data=0.3" in report["score"]["kind"]
    assert report["score"]["value"] == transfer["proxy_search"]["score"] == report["search"]["transfer"]["proxy_score"]
    assert transfer["proxy"]["train_images"] == round(0.3 * (1437 - 143)) and transfer["proxy"]["align"] == 4
    assert transfer["projected_widths"] == report["widths"]["widths"] and transfer["feasible"]
    # each delivered width is the proxy's multiplier times the global scale times the full width (at most
    # full), to the nearest width offered (multiples of 8, thinned to the latency staircase)
    s = transfer["global_scale"]
    for name, w in transfer["projected_widths"].items():
        full = transfer["target"]["full_widths"][name]
        assert abs(w - min(full, s * transfer["target_multipliers"][name] * full)) <= 8
        assert transfer["mapping"][name]["from"] == [[name, 1.0]]  # narrower proxy: same group names
        assert transfer["target_multipliers"][name] == transfer["proxy_search"]["multipliers"][name]


def test_search_on_a_shallower_proxy_writes_target_widths_and_the_projection(tmp_path):
    out = tmp_path / "s"
    done = run_cli("search", "slimdeploy.models:cifar_resnet20", "--input-shape", "1,3,16,16", "--data", "digits",
                   "--proxy", "width=0.5,depth=min,data=0.3,stack=average", "--latency", "0.6x", "--search-option",
                   "population=4", "--search-option", "generations=1", "--samples", "8", "--threads", "1",
                   "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    transfer = json.loads((out / "transfer.json").read_text())
    widths = json.loads((out / "widths.json").read_text())["widths"]
    assert widths == transfer["projected_widths"] and len(widths) == 12 and transfer["target_costs"][LATENCY] <= 0.6
    assert transfer["proxy"]["blocks_per_stage"] == [1, 1, 1] and len(transfer["proxy_search"]["widths"]) == 6
    assert transfer["mapping"]["layers.8.conv1"]["rule"] == "stack-average"
    assert json.loads((out / "front.json").read_text())["chosen"]["0.6x"]["widths"] == widths


def test_the_proxy_search_is_budgeted_on_the_targets_costs_or_on_its_own_at_the_same_share():
    from slimdeploy.search import get_searcher
    from slimdeploy.transfer.searcher import TransferSearch

    def cost_vector(model, x, analysis):
        counts = CostModel.build(model, x, ChannelMap.build(model, analysis))
        full = counts.counts(analysis.space.full())[0]
        return {LATENCY: lambda w: counts.counts(w)[0] / full, "macs": lambda w: counts.counts(w)[0]}, full

    target = CifarResNet(3, 16).eval()
    analysis, layout = laid_out(target)
    proxy = build_proxy(target, X16, parse_proxy("width=0.5,depth=min,cost=proxy"), layout, align=8)
    projection = Projection.match(analysis.space, layout, proxy.analysis.space, proxy.layout)
    costs, full = cost_vector(target, X16, analysis)
    problem = SearchProblem(analysis.space, costs, {LATENCY: 0.5, "macs": 0.6 * full}, lambda w: 0.0, align=8)
    on_target = TransferSearch(get_searcher("uniform"), proxy, projection, lambda w: 0.0, "zero")
    sub = on_target.proxy_problem(problem)
    w = proxy.analysis.space.uniform(0.5, 4)
    assert sub.limits == problem.limits and sub.cost_of(w) == problem.cost_of(on_target._projected(w, problem))
    result = on_target.search(problem)
    assert result.best.feasible and problem.meets(result.widths) and on_target.score(result.widths) == 0.0
    assert on_target.last["global_scale"] > 0 and set(on_target.last["projected_widths"]) == set(result.widths.widths)

    proxy_costs, proxy_full = cost_vector(proxy.model, proxy.example, proxy.analysis)
    on_proxy = TransferSearch(get_searcher("uniform"), proxy, projection, lambda w: 0.0, "zero", proxy_costs=proxy_costs)
    sub = on_proxy.proxy_problem(problem)
    assert sub.limits == {LATENCY: 0.5, "macs": pytest.approx(0.6 * proxy_full)}
    assert on_proxy.search(problem).best.feasible
    with pytest.raises(SlimdeployError, match=r"on the proxy's own costs \(cost=proxy\) the latency limit cannot"):
        on_proxy.search(SearchProblem(analysis.space, costs, {LATENCY: 0.01}, lambda w: 0.0, align=8))


def test_compress_refuses_a_proxy_it_cannot_match_before_measuring_anything(tmp_path):
    from slimdeploy.pipeline import compress

    lines = []
    with pytest.raises(Unmappable, match=r"cannot map \d+ channel group\(s\).*stem\.0"):  # narrowed to 1 channel
        compress("slimdeploy.models:cifar_resnet8", tmp_path / "c", latency="0.5x", input_shape=(1, 3, 16, 16),
                 proxy="width=0.05", say=lines.append)
    assert list(tmp_path.iterdir()) == [] and not any("measuring" in line for line in lines)
