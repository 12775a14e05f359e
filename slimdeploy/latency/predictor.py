"""A fitted predictor of end-to-end latency from widths, built from per-node timings (no torch).

Every measured configuration contributes its end-to-end latency T (a ratio to a reference model
timed interleaved with it, times the reference's latency, so a drifting machine cancels out)
and, where the runtime reports them, per-node times. Each node's share of the profiled total,
times T, is that node's target; the targets of one configuration sum to T exactly, so fixed
overheads are spread over the nodes instead of being lost.

Per node the model is a non-negative combination of features of its input and output channel
counts, raw and padded up to the CPU kernels' block of 16 channels (the steps of the staircase),
plus terms for counts off the block: ORT then runs the neighbouring ops in another layout, and a
convolution reading 8 channels measured slower than one reading 16 (MobileNetV2 here), so latency
may fall when a width grows onto the block. Counts off the 8-channel block (widths in steps of 4)
have terms of their own: on AVX2 ORT pads such a node's output to 8 and reads it back through a
plain-layout kernel, reporting the padded count (which the channel maps accept). Which widths set
a node's channel counts is learned from the samples themselves: each count is an exact linear
function of the group widths (a constant, one group's width, or a sum for concatenations). Each
node kind is then scaled on the end-to-end figures (`_calibrate`).

Without node times (torch eager, a remote device) the model is fitted on end-to-end figures
alone, choosing by cross-validation on the training figures among: per-group slopes, a line in the
MACs, MACs per layer kind (their speeds differ), and MACs per kind plus per-group slopes. The MACs
of any widths come from polynomials in the widths that `costs.CostModel.macs_polynomials` derives
exactly from the model and that are saved with the latency model, so prediction needs no torch.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

from ..errors import SlimdeployError

FORMAT = "slimdeploy.latency-model/1"
BLOCK = 16  # the staircase's step: ORT's NCHWc CPU kernels handle 16 channels at a time (shared/LATENCY-NOTES.md)
LAYOUT_BLOCKS = (8, 16)  # what ORT pads a blocked node's channels to (8 on AVX2, 16 on AVX-512)
FINE_BLOCK = min(LAYOUT_BLOCKS)  # a count off it is padded by ORT and read back by a plain-layout kernel
LAYOUT_NODE = "<layout conversions>"


@dataclass
class Sample:
    """One measured configuration: widths, end-to-end ms, per-node times (may be empty), MACs."""

    widths: dict[str, int]
    ms: float
    nodes: list[dict[str, Any]] = field(default_factory=list)
    macs: int | None = None


def _pad(c, block: int = BLOCK):
    """Channel counts padded up to the block (arrays or scalars)."""
    return np.ceil(np.asarray(c, float) / block) * block


def node_features(cin: np.ndarray, cout: np.ndarray) -> np.ndarray:
    """Non-negative features of a node's channel counts (one row per configuration).

    The last two columns (counts off the fine block, where ORT pads a node's output and runs
    its consumer on a plain layout) came later; models saved before them use the first eight."""
    cin, cout = np.asarray(cin, float), np.asarray(cout, float)
    pin, pout = _pad(cin), _pad(cout)
    off_in, off_out = (pin != cin).astype(float), (pout != cout).astype(float)
    fine_in, fine_out = (cin % FINE_BLOCK != 0).astype(float), (cout % FINE_BLOCK != 0).astype(float)
    return np.stack([np.ones_like(cin), pin, pout, cin * cout, pin * pout, (pin * pout) ** 2,
                     off_in * pout, off_out * pin, fine_in * pout, fine_out * pin], axis=1)


def layout_features(widths: Sequence[Mapping[str, int]], groups: Sequence[str]) -> np.ndarray:
    """Features of the layout conversions ORT inserts around groups whose width is off a block.

    Per group its width when off the staircase's block, then (added later, after the first
    1 + groups columns) when off the fine block."""
    return np.asarray([[1.0] + [float(w[g]) if w[g] % BLOCK else 0.0 for g in groups]
                       + [float(w[g]) if w[g] % FINE_BLOCK else 0.0 for g in groups] for w in widths])


# ---------------------------------------------------------------------- channel maps


@dataclass
class ChannelMap:
    """channels = constant + Σ coefficient·width[group] (exact on every sample)."""

    constant: float
    terms: dict[str, float]

    def __call__(self, widths: Mapping[str, int]) -> float:
        return self.constant + sum(k * widths[g] for g, k in self.terms.items())

    def to_json(self) -> dict[str, Any]:
        return {"constant": self.constant, "terms": self.terms}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ChannelMap":
        return cls(float(d["constant"]), {str(k): float(v) for k, v in d["terms"].items()})


def fit_channel_map(counts: Sequence[float], widths: Sequence[Mapping[str, int]],
                    groups: Sequence[str]) -> ChannelMap | None:
    """The linear map from widths to `counts`, or None if none is exact on every sample.

    Nodes that run in the blocked layout report their channels padded up to the layout's block
    (8 or 16 floats, by the CPU's vector width), so a count may equal a group's width or that
    width padded."""
    y = np.asarray(counts, float)
    if np.all(y == y[0]):
        return ChannelMap(float(y[0]), {})
    for g in groups:  # the common case: one group's width, possibly times a factor
        w = np.asarray([ws[g] for ws in widths], float)
        for k in (1.0, float(np.median(y / w))):
            if any(np.all((y == k * w) | (y == _pad(k * w, block))) for block in LAYOUT_BLOCKS):
                return ChannelMap(0.0, {g: k})
    x = np.asarray([[1.0] + [ws[g] for g in groups] for ws in widths])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    beta = np.where(np.abs(beta - np.round(beta)) < 1e-6, np.round(beta), beta)
    if np.max(np.abs(x @ beta - y)) > 0.5:
        return None
    return ChannelMap(float(beta[0]), {g: float(b) for g, b in zip(groups, beta[1:]) if abs(b) > 1e-9})


def canonical_node(name: str, op: str) -> str:
    """A node's name independent of the layout ORT chose for it; layout conversions pool into one."""
    if op.startswith("Reorder"):
        return LAYOUT_NODE
    return re.sub(r"(_output_\d+)?_nchwc$", "", name)


# ---------------------------------------------------------------------- the model


@dataclass
class NodeModel:
    name: str
    op: str
    cin: ChannelMap
    cout: ChannelMap
    coef: list[float]
    groups: list[str] | None = None  # set for the pooled layout conversions
    kind: str = ""                   # calibration class (op, kernel, depthwise)

    def predict(self, widths: Mapping[str, int]) -> float:
        if self.groups is not None:
            f = layout_features([widths], self.groups)[0]
        else:
            f = node_features(np.array([self.cin(widths)]), np.array([self.cout(widths)]))[0]
        return float(f[:len(self.coef)] @ np.asarray(self.coef))  # a model saved with fewer features


@dataclass
class LatencyModel:
    """widths → predicted end-to-end latency in ms on one runtime + device."""

    structure: str
    groups: dict[str, int]            # group → full width
    ranges: dict[str, tuple[int, int]]  # group → (min, max) width seen in fitting
    nodes: list[NodeModel]
    terms: dict[str, float]  # with node times: per-kind scales + intercept; without: see `_fit_without_nodes`
    meta: dict[str, Any] = field(default_factory=dict)
    macs: dict[str, list] = field(default_factory=dict)  # layer kind → MACs polynomial in the widths (no node times)

    # -- prediction

    def out_of_range(self, widths: Mapping[str, int]) -> list[str]:
        """Groups whose width lies outside the range the model was fitted on."""
        return [g for g, (lo, hi) in self.ranges.items() if not lo <= widths.get(g, self.groups[g]) <= hi]

    def predict(self, widths: Mapping[str, int]) -> float:
        """Predicted latency (ms); groups left out are at full width."""
        unknown = sorted(set(widths) - set(self.groups))
        if unknown:
            raise SlimdeployError(f"the latency model knows no group {unknown[0]!r}; it was fitted for "
                                  f"structure {self.structure}")
        full = {**self.groups, **{g: int(v) for g, v in widths.items()}}
        if self.nodes:
            sums = self._kind_sums(full)
            return self.terms.get("intercept", 0.0) + sum(self.terms.get(f"scale:{k}", 1.0) * v
                                                             for k, v in sums.items())
        return float(sum(c * _feature(name, full, self.macs) for name, c in self.terms.items()))

    def _kind_sums(self, widths: Mapping[str, int]) -> dict[str, float]:
        sums: dict[str, float] = {}
        for n in self.nodes:
            sums[n.kind] = sums.get(n.kind, 0.0) + n.predict(widths)
        return sums

    def explain(self, widths: Mapping[str, int]) -> dict[str, Any]:
        """Prediction with the out-of-range groups named (so callers can say so)."""
        outside = self.out_of_range(widths)
        return {"latency_ms": self.predict(widths), "in_range": not outside, "out_of_range": outside}

    # -- persistence

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "structure": self.structure, "groups": self.groups,
            "ranges": {g: list(r) for g, r in self.ranges.items()},
            "nodes": [{"name": n.name, "op": n.op, "cin": n.cin.to_json(), "cout": n.cout.to_json(),
                       "coef": n.coef, "groups": n.groups, "kind": n.kind} for n in self.nodes],
            "terms": self.terms, "meta": self.meta, **({"macs": self.macs} if self.macs else {}),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "LatencyModel":
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise SlimdeployError(f"not a slimdeploy latency model (expected format {FORMAT!r})")
        nodes = [NodeModel(n["name"], n["op"], ChannelMap.from_json(n["cin"]), ChannelMap.from_json(n["cout"]),
                           [float(c) for c in n["coef"]], n.get("groups"), n.get("kind", n["op"]))
                 for n in d["nodes"]]
        return cls(d["structure"], {g: int(w) for g, w in d["groups"].items()},
                   {g: (int(r[0]), int(r[1])) for g, r in d["ranges"].items()}, nodes,
                   {k: float(v) for k, v in d["terms"].items()}, dict(d.get("meta") or {}), dict(d.get("macs") or {}))

    @classmethod
    def load(cls, path) -> "LatencyModel":
        try:
            with open(path) as f:
                return cls.from_json(json.load(f))
        except FileNotFoundError:
            raise SlimdeployError(f"latency model not found: {path} (write one with `slimdeploy profile`)") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SlimdeployError(f"{path} is not a latency model written by `slimdeploy profile` "
                                  f"({type(exc).__name__}: {exc})") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise SlimdeployError(f"{path} is not a latency model written by `slimdeploy profile` "
                                  f"(missing or bad field: {exc})") from None


def _pooled_nodes(sample: Sample) -> dict[str, dict[str, Any]]:
    """A sample's nodes by canonical name, times of nodes sharing a name summed."""
    pooled: dict[str, dict[str, Any]] = {}
    for n in sample.nodes:
        key = canonical_node(n["name"], n["op"])
        if key in pooled:
            pooled[key]["ms"] += n["ms"]
        else:
            pooled[key] = {**n, "name": key}
    return pooled


def _node_targets(pooled: Sequence[dict[str, dict[str, Any]]], samples: Sequence[Sample]) -> dict[str, np.ndarray]:
    """Per node, its share of each sample's profiled total times that sample's latency."""
    names = list(dict.fromkeys(k for p in pooled for k in p))
    targets = {name: np.zeros(len(samples)) for name in names}
    for i, (p, s) in enumerate(zip(pooled, samples)):
        total = sum(n["ms"] for n in p.values())
        for name, n in p.items():
            targets[name][i] = n["ms"] / total * s.ms
    return targets


def _nnls(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Non-negative least squares on columns scaled to [0, 1]."""
    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
    coef, _ = nnls(x / scale, y)
    return [float(c) for c in coef / scale]


def _fit_nodes(samples: Sequence[Sample], groups: Sequence[str]) -> list[NodeModel]:
    widths = [s.widths for s in samples]
    pooled = [_pooled_nodes(s) for s in samples]
    models = []
    for name, y in _node_targets(pooled, samples).items():
        if name == LAYOUT_NODE:
            models.append(NodeModel(name, "Reorder", ChannelMap(0, {}), ChannelMap(0, {}),
                                    _nnls(layout_features(widths, groups), y), list(groups), "Reorder"))
            continue
        rows = [i for i, p in enumerate(pooled) if name in p]
        info = pooled[rows[0]][name]
        maps = []
        for key in ("in_channels", "out_channels"):
            counts = [pooled[i][name][key] or 1 for i in rows]
            cmap = fit_channel_map(counts, [widths[i] for i in rows], groups)
            maps.append(cmap or ChannelMap(float(np.median(counts)), {}))
        x = node_features(np.array([maps[0](w) for w in widths]), np.array([maps[1](w) for w in widths]))
        kind = info.get("kind") or (f"{info['op']}-dw" if maps[0].terms and maps[0].terms == maps[1].terms
                                    else info["op"])
        models.append(NodeModel(name, info["op"], maps[0], maps[1], _nnls(x, y), None, kind))
    return models


def polynomial_value(terms: Sequence, widths: Mapping[str, int]) -> float:
    """A `CostModel.macs_polynomials` polynomial at `widths` (every group named)."""
    return float(sum(c * math.prod(widths[g] for g in names) for names, c in terms))


# Feature sets tried without node times, each a list of feature families (see `_columns`)
CANDIDATES = {"group slopes": ("width", "padded"), "MACs line": ("macs",), "MACs per kind": ("kinds",),
              "MACs per kind + group slopes": ("kinds", "width", "padded")}
FOLDS = 5
SIMPLER_WITHIN = 0.02  # the candidate with fewest terms among those within 2% of the lowest error wins


def _columns(families: Sequence[str], groups: Sequence[str], macs: Mapping[str, list]) -> list[str]:
    names = ["intercept"] + (["offset"] if any(f in ("macs", "kinds") for f in families) else [])
    for family in families:
        names += ({"width": [f"width:{g}" for g in groups], "padded": [f"padded:{g}" for g in groups],
                   "macs": ["macs"], "kinds": [f"macs:{k}" for k in sorted(macs)]}[family])
    return names


def _feature(name: str, widths: Mapping[str, int], macs: Mapping[str, list]) -> float:
    """The value of one term's feature (a term's name says what it multiplies)."""
    kind, _, group = name.partition(":")
    if kind == "intercept":
        return 1.0
    if kind == "offset":  # with "intercept" under non-negative least squares: an intercept of either sign
        return -1.0
    if kind == "width":
        return float(widths[group])
    if kind == "padded":
        return float(_pad(widths[group]))
    if name == "macs":
        return sum(polynomial_value(p, widths) for p in macs.values())
    return polynomial_value(macs[group], widths)


def _relative_nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients, least squares on relative error."""
    return np.asarray(_nnls(x / y[:, None], np.ones_like(y)))


def _cv_error(x: np.ndarray, y: np.ndarray) -> float:
    """Root mean square relative error over `FOLDS` folds (every FOLDS-th sample held out in turn)."""
    errors = []
    for fold in range(FOLDS):
        test = np.arange(len(y)) % FOLDS == fold
        if test.any() and (~test).sum() >= 3:
            errors += list(x[test] @ _relative_nnls(x[~test], y[~test]) / y[test] - 1)
    return float(np.sqrt(np.mean(np.square(errors)))) if errors else float("inf")


def _fit_without_nodes(samples: Sequence[Sample], groups: Sequence[str],
                       macs: Mapping[str, list]) -> tuple[dict[str, float], str, dict[str, float]]:
    """Terms of the candidate feature set with the lowest cross-validated error, its name, and every
    candidate's error.

    Per-group slopes (intercept + slope·width + slope·padded width per group) are always tried;
    the MACs candidates need the polynomials. Coefficients are non-negative, fitted on relative error."""
    columns = {name: _columns(families, groups, macs) for name, families in CANDIDATES.items()
               if macs or not any(f in ("macs", "kinds") for f in families)}
    every = list(dict.fromkeys(n for names in columns.values() for n in names))
    table = np.asarray([[_feature(n, s.widths, macs) for n in every] for s in samples])
    x = {name: table[:, [every.index(n) for n in names]] for name, names in columns.items()}
    y = np.asarray([s.ms for s in samples])
    errors = {name: _cv_error(x[name], y) for name in columns}
    lowest = min(errors.values())
    best = min((name for name in columns if errors[name] <= lowest * (1 + SIMPLER_WITHIN) + 1e-12),
               key=lambda name: len(columns[name]))
    terms = dict(zip(columns[best], (float(c) for c in _relative_nnls(x[best], y))))
    return terms, best, {name: round(e, 5) for name, e in errors.items()}


def fit(samples: Sequence[Sample], structure: str, full_widths: Mapping[str, int],
        meta: Mapping[str, Any] | None = None, macs: Mapping[str, list] | None = None) -> LatencyModel:
    """Fit a `LatencyModel` on measured samples (node times used when every sample has them).

    `macs`: per layer kind, the MACs as polynomials in the widths (`costs.CostModel.macs_polynomials`);
    used, and kept with the model, only where the samples have no node times."""
    if len(samples) < 3:
        raise SlimdeployError(f"fitting a latency model needs at least 3 measured configurations, got {len(samples)}")
    groups = list(full_widths)
    samples = [Sample({**full_widths, **s.widths}, s.ms, s.nodes, s.macs) for s in samples]
    ranges = {g: (min(s.widths[g] for s in samples), max(s.widths[g] for s in samples)) for g in groups}
    with_nodes = all(s.nodes for s in samples)
    nodes = _fit_nodes(samples, groups) if with_nodes else []
    model = LatencyModel(structure, dict(full_widths), ranges, nodes, {},
                         {**dict(meta or {}), "n_train": len(samples), "node_times": with_nodes})
    if with_nodes:
        model.terms = _calibrate(model, samples)
    else:
        model.macs = dict(macs or {})
        model.terms, model.meta["features"], model.meta["features_cv_rms"] = _fit_without_nodes(
            samples, groups, model.macs)
    return model


CALIBRATION_PULL = 0.01  # weight of the pull of every scale towards 1


def _calibrate(model: LatencyModel, samples: Sequence[Sample]) -> dict[str, float]:
    """Scale per kind of node, and an offset, so node sums match whole-network latency.

    Profiling inflates small kernels more than large ones (depthwise convolutions read about
    twice their unprofiled share here), so each kind gets its own non-negative scale, fitted on
    relative error of the end-to-end figures and pulled towards 1 so that few samples cannot
    drive it wild. Kinds under 2% of the latency keep scale 1."""
    sums = [model._kind_sums(s.widths) for s in samples]
    y = np.asarray([s.ms for s in samples])
    mean = {k: np.mean([s.get(k, 0.0) for s in sums]) for k in {k for s in sums for k in s}}
    kinds = sorted(k for k, v in mean.items() if v >= 0.02 * y.mean())
    fixed = np.asarray([sum(v for k, v in s.items() if k not in kinds) for s in sums])
    x = np.asarray([[s.get(k, 0.0) for k in kinds] + [1.0, -1.0] for s in sums]) / y[:, None]
    target = 1.0 - fixed / y
    pull = np.sqrt(CALIBRATION_PULL * len(y))
    x = np.vstack([x, np.hstack([pull * np.eye(len(kinds)), np.zeros((len(kinds), 2))])])
    target = np.concatenate([target, pull * np.ones(len(kinds))])
    coef, _ = nnls(x, target)
    return {**{f"scale:{k}": float(c) for k, c in zip(kinds, coef[:-2])}, "intercept": float(coef[-2] - coef[-1])}


# ---------------------------------------------------------------------- validation


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def error_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """MAPE, share within ±5% and ±10% (relative to measured), Spearman rank correlation."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = np.abs(p - m) / m
    return {"mape": float(np.mean(rel)), "within_5pct": float(np.mean(rel <= 0.05)),
            "within_10pct": float(np.mean(rel <= 0.10)), "spearman": _spearman(p, m),
            "max_error": float(np.max(rel))}


def macs_line(train: Sequence[Sample]) -> tuple[float, float]:
    """The MACs-proportional baseline: latency = a·MACs + b, least squares on relative error."""
    x = np.asarray([[s.macs, 1.0] for s in train], float)
    y = np.asarray([s.ms for s in train])
    (a, b), *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    return float(a), float(b)


def validate(model: LatencyModel, train: Sequence[Sample], test: Sequence[Sample]) -> dict[str, Any]:
    """Held-out error of `model` and, side by side, of the MACs line fitted on the same `train`.

    `held_out` lists each held-out configuration's measured and predicted ms (and the MACs
    line's, with its MACs, where counted), for plotting predicted against measured.
    """
    measured = [s.ms for s in test]
    predicted = [model.predict(s.widths) for s in test]
    report: dict[str, Any] = {"n_train": len(train), "n_test": len(test), **error_metrics(predicted, measured)}
    points = [{"measured_ms": round(m, 5), "predicted_ms": round(p, 5)} for m, p in zip(measured, predicted)]
    if all(s.macs for s in list(train) + list(test)):
        a, b = macs_line(train)
        line = [a * s.macs + b for s in test]
        report["macs_baseline"] = error_metrics(line, measured)
        for point, sample, ms in zip(points, test, line):
            point.update(macs=sample.macs, macs_line_ms=round(ms, 5))
    report["held_out"] = points
    return report
