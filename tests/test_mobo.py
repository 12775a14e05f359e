"""MOBO-RS pieces on hand-computed cases: scalarization, Pareto fronts, bin weights, the additive kernel, the sampler."""
from __future__ import annotations

import numpy as np
import pytest

from slimdeploy.mobo import History, MoboSampler, bin_weights, preference, successive_fronts, tchebyshev
from slimdeploy.mobo.gp import AdditiveMatern, Surrogate
from slimdeploy.search import non_dominated


def test_augmented_tchebyshev_on_hand_computed_points():
    f = [[2.0, 1.0], [1.0, 3.0]]
    # λ·(f − z) = (1, 0.5) → 1 + 0.1·1.5 ; (0.5, 1.5) → 1.5 + 0.1·2
    assert tchebyshev(f, [0.5, 0.5], [0.0, 0.0], rho=0.1) == pytest.approx([1.15, 1.7])
    # all weight on the loss: 2 + 0.1·2 and 1 + 0.1·1
    assert tchebyshev(f, preference(0.0), [0.0, 0.0], rho=0.1) == pytest.approx([2.2, 1.1])
    # the reference point shifts every objective: (2 − (−1), 1 − (−1)) · 0.5 = (1.5, 1.0)
    assert tchebyshev([2.0, 1.0], [0.5, 0.5], [-1.0, -1.0], rho=0.0) == pytest.approx([1.5])
    assert list(preference(0.25)) == [0.75, 0.25]
    with pytest.raises(ValueError):
        preference(1.5)


POINTS = [(0.2, 1.0), (0.5, 0.4), (0.6, 0.5), (1.0, 0.3), (0.3, 1.1)]  # (cost, loss); 2 and 4 are dominated


def test_pareto_filtering_and_successive_fronts_on_hand_computed_points():
    assert non_dominated(POINTS) == [0, 1, 3]
    assert successive_fronts(POINTS, until_cost=0.9) == [0, 1, 3]      # the first front already reaches 0.9
    assert successive_fronts(POINTS, until_cost=1.5) == [0, 1, 3, 4, 2]  # then the second front, by cost
    low = [(0.2, 1.0), (0.5, 0.4), (0.6, 0.5), (0.3, 1.1), (0.9, 0.45)]
    assert successive_fronts(low, until_cost=0.9) == [0, 1, 3, 2, 4]  # front 1 stops at 0.5: peel on


def test_pareto_aware_bin_weights_follow_the_front_segments():
    edges = np.linspace(0.2, 1.0, 5)  # bins [.2,.4] [.4,.6] [.6,.8] [.8,1]
    # segments: (0.2→0.5, drop 0.6) and (0.5→1.0, drop 0.1); each bin gets overlap × drop
    areas = np.array([0.2 * 0.6, 0.1 * 0.6 + 0.1 * 0.1, 0.2 * 0.1, 0.2 * 0.1])
    assert bin_weights(POINTS, edges) == pytest.approx(areas / areas.sum())
    assert bin_weights(POINTS, edges, floor=0.2) == pytest.approx(0.8 * areas / areas.sum() + 0.2 / 4)
    assert bin_weights([(0.5, 1.0)], edges) == pytest.approx([0.25] * 4)  # no segment: uniform


def test_additive_kernel_is_a_sum_of_one_dimensional_materns_with_exact_gradients():
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(6, 3))
    kernel = AdditiveMatern(np.array([0.5, 1.0, 2.0]), np.array([0.3, 0.7, 1.5]))
    r = abs(X[0, 1] - X[1, 1]) / 0.7
    one_d = 1.0 * (1 + np.sqrt(5) * r + 5 * r * r / 3) * np.exp(-np.sqrt(5) * r)
    X2 = X.copy()
    X2[1, [0, 2]] = X[0, [0, 2]]  # rows 0 and 1 differ in dimension 1 only
    assert kernel(X2)[0, 1] == pytest.approx(0.5 + one_d + 2.0)
    K, grad = kernel(X, eval_gradient=True)
    theta, eps = kernel.theta, 1e-6
    for i in range(len(theta)):
        up, down = kernel.clone_with_theta(theta + eps * np.eye(len(theta))[i]), \
            kernel.clone_with_theta(theta - eps * np.eye(len(theta))[i])
        assert grad[..., i] == pytest.approx((up(X) - down(X)) / (2 * eps), abs=1e-6)
    fitted = Surrogate(3, additive=True).fit(X, X.sum(1) - X.sum(1).mean())
    mean, std = fitted.predict(X)
    assert mean == pytest.approx(X.sum(1) - X.sum(1).mean(), abs=0.05) and (std < 0.2).all()


def _problem():
    choices = {f"g{i}": list(range(8, 65, 8)) for i in range(6)}
    weights = [4, 3, 2, 1, 1, 1]

    def cost(w):  # additive latency-like cost, 1.0 at full width
        return 0.1 + 0.9 * sum(k * w[f"g{i}"] for i, k in enumerate(weights)) / (64 * sum(weights))

    def loss(w):  # cheap groups matter most
        return sum(k / np.sqrt(w[f"g{i}"]) for i, k in enumerate(reversed(weights)))
    return choices, cost, loss


def test_sampler_warms_up_on_uniform_widths_then_hits_target_costs():
    choices, cost, loss = _problem()
    sampler = MoboSampler(choices, cost, raw_samples=400, prior_points=8, seed=0)
    history, rng = sampler.history(), np.random.default_rng(0)
    assert history.alpha(sampler.full()).tolist() == [1.0] * 6 and history.alpha(sampler.smallest()).tolist() == [0] * 6
    warm = []
    while len(history.scored()) < 8:
        for w in sampler.propose(history, 2, rng):
            warm.append(w)
            if history.add(w, cost(w)):
                history.visits[-1].loss = loss(w)
    assert all(len(set(w.values())) == 1 for w in warm)  # s·𝟙: one width for every group
    assert sampler.full() in warm and not sampler.gp_seconds
    for target in (0.3, 0.4, 0.5):
        (w,) = sampler.propose(history, 1, rng, target=target)
        assert abs(cost(w) - target) <= 0.05, (target, cost(w))
    assert len(sampler.gp_seconds) == 3
    # at equal cost the surrogate prefers widening the groups the loss depends on (g5 over g0)
    (w,) = sampler.propose(history, 1, rng, target=0.5)
    assert w["g5"] >= w["g0"]


def test_history_round_trips_through_json_and_refuses_duplicates():
    history = History(["a", "b"], {"a": 32, "b": 64}, {"a": 8, "b": 16})
    assert history.add({"a": 8, "b": 64}, 0.5) and not history.add({"a": 8, "b": 64}, 0.5)
    history.rescore([1.25])
    again = History.from_json(history.to_json())
    assert again.visits == history.visits and again.alphas().tolist() == [[0.0, 1.0]]
