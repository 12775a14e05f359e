"""Setting up a search for a model: where latency comes from, the cost vector, a budget's limits."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .analysis import Analysis
from .costs import CostModel
from .errors import SlimdeployError
from .latency.db import LatencyDB
from .latency.noise import noise_note
from .latency.oracle import MeasuredLatency, PredictedLatency
from .latency.predictor import LatencyModel
from .latency.profile import build_profile, staircase
from .options import LatencyOptions, SearchOptions
from .runtimes import Runtime, get_runtime
from .search import LATENCY
from .space import Widths

LATENCY_SOURCES = ("fit", "measure")


def resolve_runtime(runtime: str | Runtime, threads: int | None = None) -> Runtime:
    """A `Runtime` from a spec such as ``onnxruntime`` or ``remote:http://HOST:PORT``; `threads` set where it applies."""
    if isinstance(runtime, Runtime):
        return runtime
    options = {"threads": threads} if threads is not None else {}
    return get_runtime(runtime, options)


def check_latency_source(source: str) -> None:
    if source not in LATENCY_SOURCES and not Path(source, "latency_model.json").is_file():
        raise SlimdeployError(f"latency_model must be one of {', '.join(LATENCY_SOURCES)} or a directory holding "
                              f"latency_model.json (from `slimdeploy profile`), got {source!r}")


def search_costs(cost_model: CostModel, latency: Callable[[Widths], float]) -> dict[str, Callable[[Widths], float]]:
    """The cost vector of a candidate: latency ratio (measured or predicted), MACs and params (counted)."""
    return {LATENCY: latency, "macs": lambda w: cost_model.counts(w)[0], "params": lambda w: cost_model.counts(w)[1]}


def search_limits(resolved: dict, latency_ratio: float) -> dict[str, float]:
    """A budget's limits for the search: the latency ratio, and the MACs/params caps that were given."""
    caps = {k: v for k, v in (("macs", resolved.get("macs")), ("params", resolved.get("params"))) if v}
    return {LATENCY: latency_ratio, **caps}


STAIRCASE_GROUPS = 6  # the groups whose narrowing saves the most, kept in the report for its plot


def _steepest(stairs: dict[str, dict], n: int) -> dict[str, dict]:
    """The `n` groups of `stairs` whose narrowest width saves the most predicted latency (widths, ms, offered)."""
    # widths ascend, so ms[-1] - ms[0] is what cutting the group from full to narrowest saves
    saved = sorted(stairs, key=lambda g: stairs[g]["ms"][-1] - stairs[g]["ms"][0], reverse=True)
    return {g: {k: stairs[g][k] for k in ("widths", "ms", "offered")} for g in saved[:n]}


def latency_source(lat: LatencyOptions, model: nn.Module, x: torch.Tensor, analysis: Analysis, rt: Runtime,
                   measured: MeasuredLatency, search: SearchOptions, say: Callable[[str], None]):
    """(widths → latency ratio, staircase widths offered per group or None, what the report says about it).

    `lat.latency_model` is "measure" (time every candidate), "fit" (measure sampled widths, fit a
    latency model, predict) or a directory written by `slimdeploy profile`.
    """
    source = lat.latency_model
    if source == "measure":
        return measured.ratio, None, {"kind": "measured"}
    if source == "fit":
        say(f"fitting a latency model: {lat.samples} configurations on {rt.describe()} (reused from the database "
            f"where measured before)")
        with LatencyDB(lat.db) as database:
            profile = build_profile(model, x, analysis, rt, samples=lat.samples, seed=0, db=database,
                                    align=search.align, say=say, measured=measured, min_fraction=search.min_fraction,
                                    sampling=lat.sampling)
        fitted, info = profile.model, {"kind": "fitted", "validation": profile.validation, "cost": profile.cost}
        v = profile.validation
        if v.get("n_test"):
            say(f"latency model: {v['within_5pct']:.0%} of {v['n_test']} held-out configurations within ±5% "
                f"(MAPE {v['mape']:.1%}){noise_note(v)}")
        if v.get("noise_warning"):
            say(f"warning: {v['noise_warning']}")
    else:
        fitted = LatencyModel.load(Path(source) / "latency_model.json")
        if fitted.structure != analysis.space.fingerprint:
            raise SlimdeployError(f"the latency model in {source} was fitted for structure {fitted.structure}, "
                                  f"this model is {analysis.space.fingerprint}; run `slimdeploy profile` for it")
        if fitted.meta.get("device") != rt.fingerprint(tuple(x.shape)):
            say(f"warning: the latency model in {source} was measured on another runtime, device or setting "
                f"({fitted.meta.get('runtime')} {fitted.meta.get('settings')}); the final check measures here")
        info = {"kind": "loaded", "path": str(source), "meta": fitted.meta}
    stairs = staircase(fitted, analysis.space, search.align, min_fraction=search.min_fraction)
    flat = sorted(g for g, v in stairs.items() if v["saves_nothing"])
    if flat:
        say(f"pruning saves nothing measurable in {len(flat)} group(s): {', '.join(flat[:5])}"
            f"{' ...' if len(flat) > 5 else ''}")
    info["groups_saving_nothing"] = flat
    info["staircase"] = _steepest(stairs, STAIRCASE_GROUPS)
    # The staircase needs per-layer resolution: only a model fitted on node times has it.
    offered = {g: v["offered"] for g, v in stairs.items()} if fitted.meta.get("node_times") else None
    return PredictedLatency(fitted).ratio, offered, info
