"""The two Gaussian-process surrogates of PareCO: loss over widths, and cost with an additive kernel.

Library: scikit-learn's `GaussianProcessRegressor` (already a dependency). botorch 0.18.1 does
install against our torch (it adds eight packages: gpytorch, linear_operator, pyre-extensions,
ninja, ...), but two exact GPs on at most a few hundred points need none of its machinery, and
the acquisition is maximized over sampled candidates (the latency of each is one cheap
prediction), not by gradient restarts through autograd. What differs from the papers' botorch models [Ours]:

* loss: Matérn-5/2 with one length scale per width variable, times a constant (the "scale
  kernel"), plus a white-noise term; hyper-parameters by maximum likelihood within bounds
  instead of the Gamma(3, 6) / Gamma(2, 0.15) priors (scikit-learn has no priors);
* cost: an additive kernel Σ_d a_d · Matérn-5/2(|x_d − y_d| / ℓ_d), one 1-D kernel per width
  variable (latency and MACs are close to additive across groups), written here as a
  scikit-learn kernel with analytic gradients;
* inputs are the width multipliers mapped to [0, 1]; outputs are standardized by the caller.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Hyperparameter, Kernel, Matern, WhiteKernel

SQRT5 = np.sqrt(5.0)


class AdditiveMatern(Kernel):
    """k(x, y) = Σ_d amplitude_d · (1 + √5 r_d + 5 r_d² / 3) · exp(−√5 r_d), r_d = |x_d − y_d| / length_scale_d."""

    def __init__(self, amplitude=1.0, length_scale=1.0, amplitude_bounds=(1e-3, 1e2),
                 length_scale_bounds=(5e-2, 2e1)):
        self.amplitude, self.length_scale = amplitude, length_scale
        self.amplitude_bounds, self.length_scale_bounds = amplitude_bounds, length_scale_bounds

    @property
    def hyperparameter_amplitude(self):
        return Hyperparameter("amplitude", "numeric", self.amplitude_bounds, len(np.atleast_1d(self.amplitude)))

    @property
    def hyperparameter_length_scale(self):
        return Hyperparameter("length_scale", "numeric", self.length_scale_bounds,
                              len(np.atleast_1d(self.length_scale)))

    def _per_dim(self, value, d: int) -> np.ndarray:
        value = np.atleast_1d(np.asarray(value, float))
        return np.full(d, value[0]) if value.size == 1 else value

    def __call__(self, X, Y=None, eval_gradient=False):
        X = np.atleast_2d(X)
        same = Y is None
        Y = X if same else np.atleast_2d(Y)
        d = X.shape[1]
        a, ls = self._per_dim(self.amplitude, d), self._per_dim(self.length_scale, d)
        r = np.abs(X[:, None, :] - Y[None, :, :]) / ls          # n × m × d
        e = np.exp(-SQRT5 * r)
        m = (1 + SQRT5 * r + 5.0 / 3.0 * r ** 2) * e
        K = (m * a).sum(-1)
        if not eval_gradient:
            return K
        if not same:
            raise ValueError("gradients are only available when Y is None")
        grads = []
        if not self.hyperparameter_amplitude.fixed:
            g = m * a                                              # d k / d log a_d
            grads.append(g if np.atleast_1d(self.amplitude).size > 1 else g.sum(-1, keepdims=True))
        if not self.hyperparameter_length_scale.fixed:
            g = a * 5.0 / 3.0 * r ** 2 * (1 + SQRT5 * r) * e      # d k / d log ℓ_d
            grads.append(g if np.atleast_1d(self.length_scale).size > 1 else g.sum(-1, keepdims=True))
        return K, (np.concatenate(grads, axis=-1) if grads else np.empty(K.shape + (0,)))

    def diag(self, X):
        X = np.atleast_2d(X)
        return np.full(X.shape[0], self._per_dim(self.amplitude, X.shape[1]).sum())

    def is_stationary(self):
        return True


class Surrogate:
    """One standardized objective over width multipliers in [0, 1]^D: `fit(X, y)`, `predict(X) -> (mean, std)`.

    Each `fit` starts its hyper-parameter search from the previous fit's optimum (the history
    grows by a few points per round) and stops after `max_iter` L-BFGS iterations: a fit costs
    well under a second on two cores instead of several.
    """

    def __init__(self, dims: int, additive: bool = False, seed: int = 0, max_iter: int = 60):
        if additive:
            self.kernel = AdditiveMatern(np.full(dims, 1.0 / dims), np.ones(dims)) + WhiteKernel(1e-4, (1e-8, 1e-1))
        else:
            self.kernel = (ConstantKernel(1.0, (1e-2, 1e2)) * Matern(np.ones(dims), (5e-2, 2e1), nu=2.5)
                           + WhiteKernel(1e-2, (1e-6, 1.0)))
        self.seed, self.max_iter = seed, max_iter
        self.model: GaussianProcessRegressor | None = None

    def _optimizer(self, objective, theta, bounds):
        result = minimize(objective, theta, jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"maxiter": self.max_iter})
        return result.x, result.fun

    @property
    def theta(self) -> list[float] | None:
        """The last fit's log hyper-parameters (the next fit starts there); None before any fit."""
        return None if self.model is None else self.model.kernel_.theta.tolist()

    def start_from(self, theta: list[float] | None) -> None:
        """Start the next fit from `theta` (a checkpoint's), or from the defaults with None."""
        self.model = None
        if theta is not None:
            self.model = GaussianProcessRegressor(self.kernel)
            self.model.kernel_ = self.kernel.clone_with_theta(np.asarray(theta, float))

    def fit(self, X: np.ndarray, y: np.ndarray) -> "Surrogate":
        start = self.model.kernel_ if self.model is not None else self.kernel
        self.model = GaussianProcessRegressor(start, optimizer=self._optimizer, normalize_y=False,
                                              random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(np.asarray(X, float), np.asarray(y, float))
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.model.predict(np.asarray(X, float), return_std=True)
        return mean, std


def standardize(y) -> np.ndarray:
    """(y − mean) / std (std 1 when the values are all equal)."""
    y = np.asarray(y, float)
    std = y.std()
    return (y - y.mean()) / (std if std > 1e-12 else 1.0)
