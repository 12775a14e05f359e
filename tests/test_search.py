"""Searchers on synthetic problems with known optima, the registry, Pareto utilities, resumable logs."""
from __future__ import annotations

import itertools
import json

import pytest

from slimdeploy.errors import SlimdeployError
from slimdeploy.search import (LATENCY, SEARCHERS, BudgetUnreachable, SearchLog, SearchProblem, front_area,
                               get_searcher, non_dominated, parse_search_options)
from slimdeploy.space import ChannelGroup, Widths, WidthSpace

# Four groups; a group's latency share and its accuracy sensitivity differ, so the best widths are not uniform.
GROUPS = {"a": (64, 4.0, 1.0), "b": (64, 1.0, 4.0), "c": (32, 2.0, 0.5), "d": (32, 1.0, 2.0)}  # width, cost, value
SPACE = WidthSpace(tuple(ChannelGroup(n, w) for n, (w, _, _) in GROUPS.items()), "synthetic")


def latency(w: Widths) -> float:
    return sum(c * w[n] for n, (_, c, _) in GROUPS.items()) / sum(c * full for full, c, _ in GROUPS.values())


def score(w: Widths) -> float:
    """Concave in each width: accuracy saturates; the optimum under a budget is interior and known by brute force."""
    return sum(v * (1 - (1 - w[n] / full) ** 2) for n, (full, _, v) in GROUPS.items())


def problem(target: float, **limits) -> SearchProblem:
    return SearchProblem(SPACE, {LATENCY: latency, "macs": lambda w: sum(w.widths.values())},
                         {LATENCY: target, **limits}, score, align=8, min_fraction=0.25)


def brute_force(p: SearchProblem) -> float:
    names = [g.name for g in SPACE]
    best = -1.0
    for combo in itertools.product(*(p.choices(n) for n in names)):
        w = Widths(SPACE.fingerprint, dict(zip(names, combo)))
        if p.meets(w):
            best = max(best, score(w))
    return best


def test_registry_lists_searchers_and_checks_their_options():
    assert {"uniform", "greedy", "slim", "evolution"} <= set(SEARCHERS)
    assert get_searcher("evolution", population=12).population == 12
    with pytest.raises(SlimdeployError, match="unknown search method 'annealing'; choose one of"):
        get_searcher("annealing")
    with pytest.raises(SlimdeployError, match=r"has no option 'popsize'; its options are population=50"):
        get_searcher("evolution", popsize=3)
    assert parse_search_options("evolution", ["population=8", "mutation_prob=0.5"]) == \
        {"population": 8, "mutation_prob": 0.5}
    assert parse_search_options("greedy", ["keep-uniform-if-better=false"]) == {"keep_uniform_if_better": False}
    with pytest.raises(SlimdeployError, match="must be a int"):
        parse_search_options("evolution", ["population=many"])
    with pytest.raises(SlimdeployError, match="key=value"):
        parse_search_options("evolution", ["population"])


@pytest.mark.parametrize("target", [0.45, 0.6, 0.8])
def test_each_searcher_meets_the_budget_and_the_shared_weight_ones_find_the_optimum(target):
    optimum = brute_force(problem(target))
    found = {}
    for name, params in (("uniform", {}), ("greedy", {}), ("slim", {}),
                         ("evolution", {"population": 30, "generations": 15, "lower_bound": 0.5})):
        result = get_searcher(name, **params).search(problem(target))
        assert result.latency_ratio <= target and result.best.feasible
        found[name] = result.score
    assert found["evolution"] == pytest.approx(optimum)       # a 7^2 x 4^2 grid: evolution finds the best
    assert found["slim"] >= optimum - 0.05                     # greedy on a concave separable score: near it
    assert found["slim"] > found["uniform"] and found["evolution"] > found["uniform"]


def test_unreachable_budget_names_the_constraint_and_the_lowest_value():
    with pytest.raises(BudgetUnreachable, match="latency budget cannot be met") as exc:
        get_searcher("uniform").search(problem(0.1))
    assert exc.value.constraint == LATENCY and exc.value.lowest == pytest.approx(0.25)
    with pytest.raises(BudgetUnreachable, match="macs budget cannot be met") as exc:
        get_searcher("slim").search(problem(0.9, macs=10))
    assert exc.value.constraint == "macs" and exc.value.lowest == 48


def test_result_front_holds_only_non_dominated_candidates():
    result = get_searcher("evolution", population=20, generations=4, lower_bound=0.5).search(problem(0.6))
    front = result.front
    assert front and all(c in result.evaluated for c in front)
    for c in front:
        assert not any(o.costs[LATENCY] <= c.costs[LATENCY] and o.score >= c.score and
                       (o.costs[LATENCY], o.score) != (c.costs[LATENCY], c.score) for o in result.evaluated)


def test_pareto_filter_and_area_on_hand_computed_points():
    points = [(1.0, 0.1), (0.5, 0.3), (0.7, 0.2), (0.6, 0.35), (0.5, 0.3)]  # (cost, error)
    assert non_dominated(points) == [1, 2, 0]
    # best accuracy 0.7 from cost 0.5, 0.8 from 0.7, 0.9 from 1.0, over [0.5, 1.0]
    area = front_area([(0.5, 0.7), (0.7, 0.8), (1.0, 0.9), (0.8, 0.75)], 0.5, 1.0)
    assert area == pytest.approx((0.7 * 0.2 + 0.8 * 0.3) / 0.5)
    assert front_area([(0.6, 0.5)], 0.5, 1.0) == pytest.approx(0.5 * 0.4 / 0.5)


def test_evolution_resumes_from_its_log_without_rescoring(tmp_path):
    calls = []

    def counting(w):
        calls.append(w)
        return score(w)

    key = {"method": "evolution"}
    first = problem(0.6)
    first.score, first.log = counting, SearchLog(tmp_path / "log.json", key)
    full_run = get_searcher("evolution", population=12, generations=3, lower_bound=0.5).search(first)
    scored = len(calls)
    saved = json.loads((tmp_path / "log.json").read_text())
    assert saved["state"]["generation"] == 4 and len(saved["scores"]) == scored

    calls.clear()
    again = problem(0.6)
    again.score, again.log = counting, SearchLog(tmp_path / "log.json", key)
    resumed = get_searcher("evolution", population=12, generations=3, lower_bound=0.5).search(again)
    assert calls == [] and resumed.widths == full_run.widths
    with pytest.raises(SlimdeployError, match="other settings"):
        SearchLog(tmp_path / "log.json", {"method": "slim"}).load(SPACE)


def test_the_staircase_narrows_what_a_search_may_offer():
    p = problem(0.6)
    p.offered = {"a": [32, 64], "b": [16, 48, 64]}
    assert p.choices("a") == [32, 64] and p.choices("b") == [16, 48, 64] and p.choices("c") == [8, 16, 24, 32]
    assert p.step_down("b", 64) == 48 and p.step_down("b", 48, 2) == 16 and p.step_down("a", 32) == 32


def test_a_re_search_after_a_measured_miss_delivers_other_narrower_widths():
    from slimdeploy.delivery import search_new_widths

    searcher, said = get_searcher("greedy"), []
    _, first = search_new_widths(searcher, problem, 0.6, set(), say=said.append)
    # The retry's target, tightened by a small miss, lands on the same staircase step: it must tighten on.
    p, again = search_new_widths(searcher, problem, 0.599, {first.widths}, say=said.append)
    assert again.widths != first.widths and latency(again.widths) < latency(first.widths) and p.meets(again.widths)
    assert len(said) >= 3 and "0.599x" in said[1]
    # A first search whose budget is unreachable says so; a re-search that tightened past the floor gives up quietly.
    with pytest.raises(BudgetUnreachable):
        search_new_widths(searcher, problem, 0.1, set(), say=said.append)
    assert search_new_widths(searcher, problem, 0.1, {first.widths}, say=said.append)[1] is None
