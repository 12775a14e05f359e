"""Build a fitted latency model for one model on one runtime: sample widths, measure, fit, validate.

Each configuration is pruned (which channels stay does not matter for latency), exported to the
runtime's artifact and timed interleaved with the full model, so its figure is a ratio that a
drifting machine cannot bend; where the runtime reports per-node times they are taken too.
Every figure goes into the latency database keyed by structure, widths, runtime settings and
device fingerprint, so a second identical run measures nothing.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..analysis import Analysis
from ..channels import ChannelMap
from ..costs import CostModel
from ..errors import SlimdeployError
from ..inspection import count_macs_params
from ..progress import bar, progress
from ..runtimes import Runtime
from ..space import MIN_WIDTH_FRACTION, Widths, WidthSpace, atomic_write_text
from .db import Figure, LatencyDB
from .noise import corrected, noise_floor, warning
from .oracle import MeasuredLatency
from .predictor import LatencyModel, Sample, fit, validate
from .sampling import covering_samples, most_uncertain

KIND = "sample"  # a configuration timed against the full model, with node times where available
REPEAT = "repeat"  # the same configuration timed again, for the noise floor


class ConfigMeasurer:
    """widths → measured figure (ratio to the full model, node times), cached in the database.

    Pruning, export and the full model's artifact come from `measured` (shared with a search)."""

    def __init__(self, measured: MeasuredLatency, db: LatencyDB | None = None, rounds: int = 5,
                 max_seconds: float = 4.0, node_runs: int = 20):
        self.source, self.runtime, self.db = measured, measured.runtime, db
        self.rounds, self.max_seconds, self.node_runs = rounds, max_seconds, node_runs
        self.space: WidthSpace = measured.analysis.space
        self.shape = measured.shape
        self.device = self.runtime.fingerprint(self.shape)
        self.measured = 0
        self.reused = 0

    def _key(self, widths: Widths, kind: str = KIND) -> dict[str, Any]:
        return {"structure": self.space.fingerprint, "widths": widths.widths, "runtime": self.runtime.name,
                "settings": self.runtime.options, "device": self.device, "kind": kind}

    def figure(self, widths: Widths, kind: str = KIND) -> Figure:
        """The stored figure for `widths`, measuring it first when the database has none.

        `kind` REPEAT is a second, independent measurement of the same configuration."""
        if self.db is not None:
            found = self.db.get(**self._key(widths, kind))
            if found is not None:
                self.reused += 1
                return found
        pruned = self.source.structure(widths)
        macs, _ = count_macs_params(pruned, self.source.example)
        path = self.runtime.export(pruned, self.source.example, self.source.path("sample"))
        result = self.runtime.compare([self.source.reference, path], self.shape, rounds=self.rounds,
                                      max_rounds=3 * self.rounds, max_seconds=self.max_seconds)
        nodes = self.runtime.node_times(path, self.shape, self.node_runs) \
            if self.runtime.supports_node_times and kind == KIND else []
        m = result.measurements[1]
        figure = Figure(**self._key(widths, kind), median_ms=m.median_ms, iqr_ms=m.iqr_ms, cv=m.cv, runs=m.runs,
                        payload={"ratio": result.ratios[1], "ratio_iqr": result.ratio_iqr[1],
                                 "reference_ms": result.measurements[0].median_ms, "stable": result.stable,
                                 "macs": macs, "nodes": nodes, "device_info": m.device})
        if self.db is not None:
            self.db.put(figure)
        self.measured += 1
        return figure


def samples_from_figures(figures: list[Figure]) -> tuple[list[Sample], float]:
    """Samples in ms: each ratio times the median reference latency over all figures."""
    reference_ms = float(np.median([f.payload["reference_ms"] for f in figures]))
    return [Sample(dict(f.widths), f.payload["ratio"] * reference_ms, list(f.payload.get("nodes") or []),
                   f.payload.get("macs")) for f in figures], reference_ms


@dataclass
class Profile:
    """A fitted latency model with its held-out validation and what building it cost."""

    model: LatencyModel
    validation: dict[str, Any]
    staircase: dict[str, Any]
    cost: dict[str, Any] = field(default_factory=dict)

    def write(self, out: str | Path) -> Path:
        """DIR/latency_model.json, DIR/validation.json, DIR/staircase.json (each written atomically)."""
        import json

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "latency_model.json", json.dumps(self.model.to_json(), indent=1))
        atomic_write_text(out / "validation.json", json.dumps({**self.validation, "cost": self.cost}, indent=2))
        atomic_write_text(out / "staircase.json", json.dumps(self.staircase, indent=2))
        return out


def build_profile(model: nn.Module, example: torch.Tensor, analysis: Analysis, runtime: Runtime,
                  samples: int = 60, test_fraction: float = 0.25, seed: int = 0, db: LatencyDB | None = None,
                  align: int = 8, say: Callable[[str], None] = lambda s: None,
                  measured: MeasuredLatency | None = None, min_fraction: float = MIN_WIDTH_FRACTION,
                  repeats: int | None = None, sampling: str = "covering") -> Profile:
    """Measure `samples` covering configurations (plus the full and the smallest), fit on the
    training part, validate on every `1/test_fraction`-th configuration held out. `measured`, when
    given, supplies pruning and the full model's artifact (a search's own, so nothing is exported twice).

    `repeats` held-out configurations (default: up to 6, at least 2) are measured a second time for
    the device's noise floor (`noise.py`), which validation.json gives beside the model's error.

    `sampling` "adaptive" measures half of `samples` covering configurations first, then a batch
    at a time where bootstrap fits disagree most, until the held-out error stops improving or
    `samples` are spent (`cost["rounds"]` has the error after each batch)."""
    if sampling not in SAMPLINGS:
        raise SlimdeployError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
    if samples < 8:
        raise SlimdeployError(f"a latency model needs at least 8 samples, got {samples}")
    if measured is None:
        with contextlib.closing(MeasuredLatency(model, example, analysis, runtime)) as own:
            return build_profile(model, example, analysis, runtime, samples, test_fraction, seed, db, align, say, own,
                                 min_fraction, repeats, sampling)
    start = time.perf_counter()
    measurer = ConfigMeasurer(measured, db)
    space = analysis.space
    first = samples if sampling == "covering" else max(8, samples // 2)
    configs = covering_samples(space, first, seed=seed, min_fraction=min_fraction, align=align)
    step = max(2, round(1 / test_fraction)) if test_fraction > 0 else 0
    test_idx = set(range(step - 1, first, step)) if step else set()
    extremes = [space.full(), space.smallest(align, min_fraction)]
    figures = []
    for i, widths in enumerate(configs + extremes):
        figures.append(measurer.figure(widths))
        done, total = i + 1, len(configs) + 2
        counts = f"{measurer.measured} measured, {measurer.reused} from the database"
        progress(say, "profiling configurations", done, total,
                 f"  {bar(done, total)} configurations ({counts})" if done % 10 == 0 or done == total else None, counts)
    macs = None if figures[0].payload.get("nodes") else macs_polynomials(model, example, analysis, align, min_fraction)
    rounds = _sample_adaptively(measurer, configs, figures, test_idx, samples, seed, align, min_fraction, say, macs) \
        if sampling == "adaptive" and test_idx else []
    repeated = _repeat(measurer, configs, sorted(test_idx), repeats, say)
    all_samples, reference_ms = samples_from_figures(figures)
    train = [s for i, s in enumerate(all_samples) if i not in test_idx]
    test = [s for i, s in enumerate(all_samples) if i in test_idx]
    meta = {"runtime": runtime.name, "settings": runtime.options, "device": measurer.device,
            "device_info": figures[0].payload.get("device_info"), "input_shape": list(example.shape),
            "reference_ms": reference_ms}
    fitted = fit(train, space.fingerprint, {g.name: g.width for g in space}, meta, macs)
    report = validate(fitted, train, test) if test else {"n_train": len(train), "n_test": 0}
    floor = noise_floor([(figures[i].payload["ratio"], again.payload["ratio"]) for i, again in repeated])
    report["noise_floor"] = floor
    report.update(corrected([p["predicted_ms"] / p["measured_ms"] - 1 for p in report.get("held_out", [])], floor))
    report["noise_warning"] = warning(floor, runtime.options.get("threads", "the default number of"))
    report.update({"runtime": runtime.describe(), "device": meta["device_info"],
                   "device_fingerprint": measurer.device, "reference_ms": reference_ms,
                   "node_times": fitted.meta["node_times"], "features": fitted.meta.get("features")})
    cost = {"configurations": len(figures), "repeats": len(repeated), "measured": measurer.measured,
            "from_database": measurer.reused, "seconds": round(time.perf_counter() - start, 1),
            "sampling": sampling, **({"rounds": rounds} if rounds else {})}
    return Profile(fitted, report, staircase(fitted, space, align, min_fraction=min_fraction), cost)


def macs_polynomials(model: nn.Module, example: torch.Tensor, analysis: Analysis, align: int = 8,
                     min_fraction: float = MIN_WIDTH_FRACTION) -> dict[str, list] | None:
    """Per layer kind, the MACs as polynomials in the widths, for fitting without node times; None
    where the channel map cannot be built (a layer it has no layout for) or the polynomials are inexact."""
    try:
        cost = CostModel.build(model, example, ChannelMap.build(model, analysis))
    except SlimdeployError:
        return None
    space = analysis.space
    return cost.macs_polynomials([space.full().widths, space.smallest(align, min_fraction).widths])


SAMPLINGS = ("covering", "adaptive")
PATIENCE, IMPROVEMENT = 2, 0.05  # adaptive sampling stops after 2 batches that cut the error by under 5%


def _sample_adaptively(measurer: ConfigMeasurer, configs: list[Widths], figures: list[Figure], test_idx: set[int],
                       budget: int, seed: int, align: int, min_fraction: float,
                       say: Callable[[str], None], macs: dict[str, list] | None = None) -> list[dict[str, Any]]:
    """Measure batches where the model is least certain (appended to `configs` and `figures`) while
    the held-out error improves; the error after each batch."""
    space = measurer.space
    full = {g.name: g.width for g in space}
    seen = set(configs) | {space.full(), space.smallest(align, min_fraction)}
    pool = [c for c in covering_samples(space, min(200, 4 * budget), seed=seed + 1, min_fraction=min_fraction,
                                        align=align) if c not in seen]
    batch, rounds, best, stale = max(2, budget // 10), [], float("inf"), 0
    while True:
        samples, _ = samples_from_figures(figures)
        train = [s for i, s in enumerate(samples) if i not in test_idx]
        test = [samples[i] for i in sorted(test_idx)]
        model = fit(train, space.fingerprint, full, macs=macs)
        rms = float(np.sqrt(np.mean([(model.predict(t.widths) / t.ms - 1) ** 2 for t in test])))
        rounds.append({"configurations": len(configs), "held_out_rms": round(rms, 5)})
        best, stale = (rms, 0) if rms < best * (1 - IMPROVEMENT) else (best, stale + 1)
        left = budget - len(configs)
        say(f"  adaptive sampling: {len(configs)} configurations, held-out rms error {rms:.1%}")
        if stale >= PATIENCE or left <= 0 or not pool:
            return rounds
        for widths in most_uncertain(train, pool, space.fingerprint, full, min(batch, left), seed=len(rounds),
                                     macs=macs):
            pool.remove(widths)
            configs.append(widths)
            figures.append(measurer.figure(widths))


def _repeat(measurer: ConfigMeasurer, configs: list[Widths], held_out: list[int], repeats: int | None,
            say: Callable[[str], None]) -> list[tuple[int, Figure]]:
    """Second measurements of held-out configurations (of the first ones when none is held out)."""
    chosen = (held_out or list(range(len(configs))))[:6 if repeats is None else repeats]
    if repeats is None and len(chosen) < 2:
        chosen = list(range(min(2, len(configs))))
    out = []
    for done, i in enumerate(chosen, 1):
        out.append((i, measurer.figure(configs[i], REPEAT)))
        progress(say, "re-measuring for the noise floor", done, len(chosen),
                 f"  {bar(done, len(chosen))} re-measured for the noise floor" if done == len(chosen) else None)
    return out


def staircase(model: LatencyModel, space: WidthSpace, align: int = 8, tolerance: float = 0.001,
              saves_nothing_below: float = 0.005, min_fraction: float = MIN_WIDTH_FRACTION) -> dict[str, Any]:
    """Per group, predicted latency over its widths with every other group full.

    `offered` keeps, for each step of the curve, the widest width on it: narrowing further
    without reaching the next step removes channels for no gain. A group whose narrowest width
    saves less than `saves_nothing_below` of the full latency is flagged.
    """
    full = {g.name: g.width for g in space}
    full_ms = model.predict(full)
    out: dict[str, Any] = {}
    for g in space:
        widths = g.choices(align, min_fraction)
        ms = [model.predict({**full, g.name: w}) for w in widths]
        offered = [w for i, w in enumerate(widths)
                   if i == len(widths) - 1 or ms[i + 1] - ms[i] > tolerance * full_ms]
        out[g.name] = {"widths": widths, "ms": [round(v, 5) for v in ms], "offered": offered,
                       "saves_nothing": bool(full_ms - ms[0] < saves_nothing_below * full_ms)}
    return out
