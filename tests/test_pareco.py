"""PareCO, Slim and TwoStage: joint training with its history, resume, the front searcher, and the CLI end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

import slimdeploy.supernet.pareco as pareco
from slimdeploy.channels import ChannelMap
from slimdeploy.costs import CostModel
from slimdeploy.data import load_dataset
from slimdeploy.errors import SlimdeployError
from slimdeploy.pipeline import compress
from slimdeploy.search import SearchProblem, get_searcher
from slimdeploy.space import Widths
from slimdeploy.supernet import Supernet, SupernetTraining
from slimdeploy.supernet.pareco import ParecoSettings, train_joint
from slimdeploy.zoo import build

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL, SHAPE = "slimdeploy.models:cifar_resnet8", (1, 3, 16, 16)


def _setup():
    model = build(SMALL).eval()
    x = torch.randn(*SHAPE)
    train, _, _ = load_dataset("digits", input_shape=SHAPE)
    supernet = Supernet(model, x)
    costs = CostModel.build(supernet.model, x, ChannelMap.build(supernet.model, supernet.analysis))
    full = costs.counts(supernet.largest())[0]
    return model, x, Subset(train, range(192)), lambda w: costs.counts(w)[0] / full


SETTINGS = ParecoSettings(visits=10, prior_points=3, raw_samples=100, search_steps=4)


def test_joint_training_visits_about_the_asked_widths_and_a_killed_run_resumes_to_the_same_weights(tmp_path,
                                                                                                    monkeypatch):
    model, x, train, cost = _setup()
    training = SupernetTraining(epochs=2, lr=0.02, batch_size=32, checkpoint_every=2)  # 12 steps, τ = 2
    whole = train_joint(Supernet(model, x), train, training, SETTINGS, cost, out=tmp_path / "a", say=lambda t: None)
    history = whole.run.history
    assert whole.training["tau"] == 2 and 8 <= len(history) <= 12
    assert whole.run.gp_seconds  # the surrogates proposed once the warm-up had losses
    assert all(v.loss is not None for v in history.visits[:-2])  # every visit re-measured at later rounds
    assert all(0 < v.cost <= 1 for v in history.visits)

    real = pareco.pareco_step

    def crashing(*args, **kwargs):
        step = real(*args, **kwargs)

        def run(model_, batch, state):
            if state.step == 9:
                raise KeyboardInterrupt  # killed after the checkpoint at step 8, past GP rounds
            return step(model_, batch, state)
        return run
    monkeypatch.setattr(pareco, "pareco_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_joint(Supernet(model, x), train, training, SETTINGS, cost, out=tmp_path / "b", say=lambda t: None)
    monkeypatch.setattr(pareco, "pareco_step", real)
    with pytest.raises(SlimdeployError, match="not empty"):
        train_joint(Supernet(model, x), train, training, SETTINGS, cost, out=tmp_path / "b", say=lambda t: None)
    resumed = train_joint(Supernet(model, x), train, training, SETTINGS, cost, out=tmp_path / "b", resume=True,
                          say=lambda t: None)
    a, b = whole.supernet.model.state_dict(), resumed.supernet.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.run.history.to_json() == history.to_json()


class _Front:
    """Shared weights as the front searcher sees them: candidate widths and proposals for a target."""

    def __init__(self, space):
        self.space = space

    def widths(self, m):
        return {g.name: max(8, int(g.width * m) // 8 * 8) for g in self.space}

    def candidates(self, until_cost=0.9):
        return [self.widths(m) for m in (0.25, 0.5, 0.75, 1.0)]

    def propose(self, target, n, cost, seed=0):
        return [self.widths(0.6)][:n]


def test_front_search_delivers_the_best_scoring_front_point_within_the_budget():
    model, x, _, cost = _setup()
    space = Supernet(model, x).space
    shared = _Front(space)
    first = next(iter(space)).name  # the score favours this group: among feasible points the best has it widest

    def score(w):
        return w[first] / 64 + 0.01 * sum(w.widths.values()) / 1000
    problem = SearchProblem(space, {"latency": lambda w: cost(w.widths)}, {"latency": 0.5}, score, shared=shared)
    result = get_searcher("pareco", refine=1).search(problem)
    feasible = [c for c in result.evaluated if c.feasible]
    assert result.best.feasible and result.best.score == max(c.score for c in feasible)
    assert {Widths(space.fingerprint, shared.widths(0.6))} <= {c.widths for c in result.evaluated} or \
        cost(shared.widths(0.6)) > 0.5
    assert all(c.feasible for c in result.evaluated)  # infeasible front points are never scored
    tight = SearchProblem(space, {"latency": lambda w: cost(w.widths)}, {"latency": 0.05}, score, shared=shared)
    with pytest.raises(SlimdeployError, match="cannot be met"):
        get_searcher("pareco").search(tight)


def test_bad_method_settings_are_refused_before_any_work(tmp_path):
    for method, options, message in (("pareco", {"visits": 1}, "visits >= 2"),
                                     ("cafenet", {"zone": -1}, "zone >= 0"),
                                     ("slim-uniform", {"beta": 0.3}, "no option 'beta'")):
        with pytest.raises(SlimdeployError, match=message):
            compress(SMALL, tmp_path / "c", latency="0.5x", data="digits", method=method, search_options=options,
                     input_shape=SHAPE, say=lambda t: None)
    assert list(tmp_path.iterdir()) == []


def _compress(out, method, budgets, *extra):
    return subprocess.run(
        [sys.executable, "-m", "slimdeploy", "compress", "slimdeploy.models:cifar_resnet8_wide", "--input-shape",
         "1,3,16,16", "--data", "digits", "--method", method, "--latency", budgets, "--samples", "8", "--threads", "1",
         "--supernet-epochs", "1", "--retries", "5", "--out", str(out), "--json", *extra],
        capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                          "SLIMDEPLOY_DB": str(out.parent / "latency.sqlite")})


def test_pareco_and_cafenet_deliver_every_budget_from_the_command_line_with_their_front(tmp_path):
    done = _compress(tmp_path / "p", "pareco", "0.3x,0.5x", "--search-option", "visits=8", "--search-option",
                     "prior_points=4", "--search-option", "raw_samples=200", "--search-option", "refine=3")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert [b["budget"] for b in summary["budgets"]] == ["0.3x", "0.5x"]
    for row, limit in zip(summary["budgets"], (0.3, 0.5)):
        assert row["latency_ratio"] <= limit and row["accuracy"] > 0.15  # a random-init spec, 21 steps: chance 0.1
        report = json.loads((tmp_path / "p" / row["folder"] / "report.json").read_text())
        assert report["method"] == "pareco" and report["verification"]["passed"]
        assert report["search"]["supernet"]["method"] == "pareco" and report["search"]["supernet"]["visited"] >= 6
    front = json.loads((tmp_path / "p" / "front.json").read_text())
    assert set(front["chosen"]) == {"0.3x", "0.5x"} and any(c["pareto"] for c in front["candidates"])
    assert (tmp_path / "p" / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    done = _compress(tmp_path / "c", "cafenet", "0.5x", "--search-option", "population=6", "--search-option",
                     "generations=1", "--search-option", "parents=3")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["method"] == "cafenet" and report["latency_ms"]["ratio"] <= 0.5
    assert report["verification"]["passed"] and report["accuracy"]["compressed"] > 0.15
    assert report["search"]["supernet"]["zone"] == 1 and report["search"]["supernet"]["bins"]
    assert {"front.json", "front.png", "model.onnx"} <= {p.name for p in (tmp_path / "c").iterdir()}


def _context(method, tmp_path, **options):
    from slimdeploy.analysis import analyse
    from slimdeploy.data import make_loader
    from slimdeploy.options import CompressOptions
    from slimdeploy.shared_weights import WeightsContext

    model, x, train, cost = _setup()
    batches = list(make_loader(train, 32))
    data = {"train_set": train, "calibration": batches[:2], "held_out": batches[2:4], "info": {"name": "digits"}}
    opts = CompressOptions.build(method=method, search_options=options, supernet_epochs=1, batch_size=32,
                                 supernet_lr=0.02)
    return WeightsContext(model, x, analyse(model, x), data, opts, lambda t: None), cost


def test_slim_trains_one_multiplier_and_twostage_searches_its_trained_sandwich_supernet(tmp_path):
    from slimdeploy.shared_weights import provide

    context, cost = _context("slim-uniform", tmp_path, visits=6)
    slim = provide("slim-uniform", context)  # no latency source given: the MACs ratio is the cost
    history = slim.run.history
    assert len(history) >= 3 and slim.run.gp_seconds == []  # no surrogate in the Slim baseline
    uniform = [slim.sampler.uniform(s) for s in np.linspace(0, 1, 201)]
    for v in history.visits:  # one multiplier: every group at the same place on its own grid
        assert v.widths in uniform and v.cost == pytest.approx(cost(v.widths))
    assert slim.summary()["mode"] == "uniform"
    widest = slim.propose(0.5, 2, cost)
    assert cost(widest[0]) <= 0.5 and len({tuple(sorted(w.items())) for w in widest}) >= 1

    context, cost = _context("twostage", tmp_path, visits=8, prior_points=4, raw_samples=100)
    two = provide("twostage", context)
    visits = two.run.history.visits
    assert len(visits) == 8 and all(v.loss is not None for v in visits) and two.run.gp_seconds
    assert two.summary()["method"] == "twostage" and two.candidates()[-1] == two.sampler.full()
