"""compress(): inspect → measure → search under the budget → prune → fine-tune → export → verify → report.

The search scores candidates with a latency model fitted to measurements on the runtime (or, if
asked, measures every candidate). The delivered model is then measured against the original
interleaved on the same runtime; if it measures over budget, the search is re-run with a tighter
target. Everything is built in a staging folder and renamed into place at the end.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from . import zoo
from .analysis import analyse
from .budget import Budget, parse_count, parse_latency
from .checkpoint import MANIFEST, load_model, replace_dir, save
from .errors import SlimdeployError
from .export import export_onnx, verify_onnx
from .inspection import count_macs_params
from .latency.db import LatencyDB
from .latency.oracle import MeasuredLatency, PredictedLatency
from .latency.predictor import LatencyModel
from .latency.profile import build_profile, staircase
from .runtimes import Runtime, get_runtime
from .progress import bar
from .prune import group_scores, prune, retained_importance
from .report import write_reports
from .search import BudgetUnreachable, SearchProblem, get_searcher
from .space import Widths

LATENCY_SOURCES = ("fit", "measure")


def resolve_runtime(runtime: str | Runtime, threads: int | None = None) -> Runtime:
    """A `Runtime` from a spec such as ``onnxruntime`` or ``remote:http://HOST:PORT``; `threads` set where it applies."""
    if isinstance(runtime, Runtime):
        return runtime
    options = {"threads": threads} if threads is not None else {}
    return get_runtime(runtime, options)


def compress(model: str | nn.Module, out: str | os.PathLike, latency: str = "0.5x", macs: str | None = None,
             params: str | None = None, data: str | None = None, method: str = "uniform", finetune_epochs: int = 0,
             lr: float = 0.01, batch_size: int = 64, threads: int | None = None, input_shape=None,
             runtime: str | Runtime = "onnxruntime", importance: str = "l2", align: int = 8, seed: int = 0,
             say: Callable[[str], None] = print, retries: int = 2, latency_model: str = "fit",
             profile_samples: int = 24, db: str | os.PathLike | None = None) -> dict:
    """Deliver a pruned model in `out` whose measured latency meets the budget; returns report.json's content.

    `latency_model` is "fit" (measure `profile_samples` configurations, fit a model, search on its
    predictions), "measure" (time every candidate), or a directory written by `slimdeploy profile`.
    Measurements are kept in the latency database `db` (default: the user cache).
    """
    if latency_model not in LATENCY_SOURCES and not Path(latency_model, "latency_model.json").is_file():
        raise SlimdeployError(f"latency_model must be one of {', '.join(LATENCY_SOURCES)} or a directory holding "
                              f"latency_model.json (from `slimdeploy profile`), got {latency_model!r}")
    rt = resolve_runtime(runtime, threads)
    budget = Budget(parse_latency(latency), parse_count(macs, "MACs") if macs else None,
                    parse_count(params, "params") if params else None)
    searcher = get_searcher(method)
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise SlimdeployError(f"{out} exists and is not a slimdeploy output; choose another --out")
    if isinstance(model, str):
        spec, model = model, load_model(model)
    else:
        spec = (getattr(model, zoo.META, None) or {}).get("source", type(model).__name__)
    shape = tuple(input_shape or (getattr(model, zoo.META, None) or {}).get("input_shape")
                  or zoo.default_input_shape(spec) or ())
    if not shape:
        raise SlimdeployError("cannot tell the model's input shape; pass input_shape (CLI: --input-shape)")
    loaders = _data(data, shape, batch_size, seed)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    model = model.eval()

    say(f"analysing channel groups of {spec}")
    analysis = analyse(model, x)
    macs0, params0 = count_macs_params(model, x)
    measured = MeasuredLatency(model, x, analysis, rt)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    try:
        say(f"measuring the original on {rt.describe()}")
        scorer, score_kind = _scorer(model, x, analysis, loaders, importance)
        original = rt.measure(measured.reference, shape)
        limits = budget.resolve(original.median_ms, macs0, params0)
        latency, offered, profile_info = _latency_source(latency_model, model, x, analysis, rt, measured,
                                                         profile_samples, seed, db, align, say)
        target = first_target = limits["latency_ms"] / original.median_ms

        def within_caps(widths: Widths) -> bool:
            if not (limits["macs"] or limits["params"]):
                return True
            m, p = count_macs_params(prune(model, widths, x, analysis=analysis), x)
            return (not limits["macs"] or m <= limits["macs"]) and (not limits["params"] or p <= limits["params"])

        for attempt in range(retries + 1):
            problem = SearchProblem(analysis.space, latency, target, scorer, within_caps, align, say, offered)
            say(f"searching widths ({method}) for latency <= {target:.3f}x of the original")
            try:
                result = searcher.search(problem)
            except BudgetUnreachable as exc:
                raise SlimdeployError(
                    f"the budget {budget.latency.text} cannot be met: the lowest latency the search reached is "
                    f"{exc.lowest_ratio:.2f}x of the original ({exc.lowest_ratio * original.median_ms:.3f} ms"
                    f" against a budget of {limits['latency_ms']:.3f} ms)") from None
            pruned = prune(model, result.widths, x, importance=importance, analysis=analysis,
                           batch=_batch(loaders, x) if importance == "taylor" else None)
            history = _finetune(pruned, model, loaders, finetune_epochs, lr, seed, say)
            shutil.rmtree(staging, ignore_errors=True)
            save(pruned, staging)
            onnx_path = export_onnx(pruned, x, staging / "model.onnx")
            say("verifying ONNX parity and measuring original vs compressed interleaved")
            parity = verify_onnx(pruned, onnx_path, x)
            parity.raise_if_failed()
            artifact = onnx_path if rt.artifact_suffix == ".onnx" else measured.export(result.widths, "delivered")
            final = rt.compare([measured.reference, artifact], shape, rounds=12)
            original_ms, compressed_ms = (m.median_ms for m in final.measurements)
            met_latency = compressed_ms <= limits["latency_ms"] if not budget.latency.relative \
                else final.ratios[1] <= budget.latency.value
            if met_latency:
                break
            expected = problem.latency(result.widths)
            say(f"delivered model measured {final.ratios[1]:.3f}x where {expected:.3f}x was expected, over budget; "
                f"tightening the target by the miss")
            target = min(0.98 * target, first_target * expected / final.ratios[1] * 0.99)
        else:
            raise SlimdeployError(f"the budget {budget.latency.text} was not met on final measurement "
                                  f"({final.ratios[1]:.3f}x after {retries + 1} searches); the machine may be too "
                                  f"noisy: retry, or give a looser budget")
        macs1, params1 = count_macs_params(pruned, x)
        report = {
            "model": spec, "method": result.method, "budget": {**budget.to_json(), "resolved": limits},
            "latency_ms": {"original": original_ms, "compressed": compressed_ms, "ratio": final.ratios[1],
                           "ratio_iqr": final.ratio_iqr[1] if final.ratio_iqr else None, "stable": final.stable,
                           "original_measurement": final.measurements[0].to_dict(),
                           "compressed_measurement": final.measurements[1].to_dict()},
            "macs": {"original": macs0, "compressed": macs1}, "params": {"original": params0, "compressed": params1},
            "accuracy": _accuracies(model, pruned, loaders),
            "score": {"kind": score_kind, "value": result.score},
            "verification": parity.to_json(),
            "widths": result.widths.to_json(),
            "groups": {g.name: {"full": g.width, "kept": result.widths[g.name]} for g in analysis.space},
            "runtime": {"name": rt.name, "settings": rt.options, "threads": final.measurements[0].threads,
                        "device": final.measurements[0].device, "input_shape": list(shape)},
            "search": {"history": result.history, "notes": result.notes + analysis.notes,
                       "latency_source": profile_info, "latency_measurements": measured.measurements,
                       "attempts": attempt + 1},
            "finetune": {"epochs": finetune_epochs, "history": history},
        }
        write_reports(staging, report)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        measured.close()
    return report


def _latency_source(source, model, x, analysis, rt, measured, samples, seed, db, align, say):
    """(latency ratio function, staircase widths offered or None, what the report says about it)."""
    if source == "measure":
        return measured.ratio, None, {"kind": "measured"}
    if source == "fit":
        say(f"fitting a latency model: {samples} configurations on {rt.describe()} (reused from the database "
            f"where measured before)")
        with LatencyDB(db) as database:
            profile = build_profile(model, x, analysis, rt, samples=samples, seed=seed, db=database,
                                    align=align, say=say, measured=measured)
        fitted, info = profile.model, {"kind": "fitted", "validation": profile.validation, "cost": profile.cost}
        v = profile.validation
        if v.get("n_test"):
            say(f"latency model: {v['within_5pct']:.0%} of {v['n_test']} held-out configurations within ±5% "
                f"(MAPE {v['mape']:.1%})")
    else:
        fitted = LatencyModel.load(Path(source) / "latency_model.json")
        if fitted.structure != analysis.space.fingerprint:
            raise SlimdeployError(f"the latency model in {source} was fitted for structure {fitted.structure}, "
                                  f"this model is {analysis.space.fingerprint}; run `slimdeploy profile` for it")
        if fitted.meta.get("device") != rt.fingerprint(tuple(x.shape)):
            say(f"warning: the latency model in {source} was measured on another runtime, device or setting "
                f"({fitted.meta.get('runtime')} {fitted.meta.get('settings')}); the final check measures here")
        info = {"kind": "loaded", "path": str(source), "meta": fitted.meta}
    stairs = staircase(fitted, analysis.space, align)
    flat = sorted(g for g, v in stairs.items() if v["saves_nothing"])
    if flat:
        say(f"pruning saves nothing measurable in {len(flat)} group(s): {', '.join(flat[:5])}"
            f"{' ...' if len(flat) > 5 else ''}")
    info["groups_saving_nothing"] = flat
    # The staircase needs per-layer resolution: only a model fitted on node times has it.
    offered = {g: v["offered"] for g, v in stairs.items()} if fitted.meta.get("node_times") else None
    return PredictedLatency(fitted).ratio, offered, info


def _data(spec, shape, batch_size, seed):
    if not spec:
        return None
    from .data import load_dataset, make_loader

    train, val, info = load_dataset(spec, input_shape=shape, seed=seed)
    return {"train": make_loader(train, batch_size, shuffle=True, seed=seed),
            "val": make_loader(val, batch_size, shuffle=False, seed=seed), "info": info}


def _scorer(model, x, analysis, loaders, importance):
    """Accuracy estimate for candidate widths: recalibrated accuracy with data, else retained importance."""
    cache: dict[tuple, float] = {}
    if loaders is None:
        scores = group_scores(model, analysis, importance if importance in ("l1", "l2", "bn") else "l2")
        return (lambda w: retained_importance(scores, w)), "retained importance (data-free; no --data given)"
    from .train import estimate_accuracy

    # The same few batches for every candidate, so scores differ only by the widths.
    calibration = [batch for _, batch in zip(range(3), loaders["train"])]
    held_out = [batch for _, batch in zip(range(4), loaders["val"])]

    def score(widths: Widths) -> float:
        key = tuple(sorted(widths.widths.items()))
        if key not in cache:
            candidate = prune(model, widths, x, analysis=analysis)
            cache[key] = estimate_accuracy(candidate, calibration, held_out, calib_batches=3, eval_batches=4)
        return cache[key]

    return score, "accuracy after BatchNorm recalibration on held-out batches (no training)"


def _batch(loaders, x):
    if loaders is None:
        return torch.randn(8, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    return next(iter(loaders["train"]))


def _finetune(pruned, teacher, loaders, epochs, lr, seed, say):
    if not loaders or epochs <= 0:
        return []
    from .train import finetune

    say(f"fine-tuning {epochs} epoch(s) with distillation from the original")
    marks = {}

    def progress(state):  # a line at every quarter of an epoch
        total = state["batches"] or 0
        quarter = 4 * state["batch"] // total if total else 0
        if quarter > marks.get(state["epoch"], 0):
            marks[state["epoch"]] = quarter
            say(f"  epoch {state['epoch']}/{state['epochs']} {bar(state['batch'], total)} loss {state['loss']:.4f}")

    return finetune(pruned, loaders["train"], epochs, lr=lr, teacher=teacher, progress=progress, seed=seed)


def _accuracies(model, pruned, loaders):
    if loaders is None:
        return None
    from .train import accuracy

    return {"original": accuracy(model, loaders["val"]), "compressed": accuracy(pruned, loaders["val"]),
            "dataset": loaders["info"]["name"], "n_val": loaders["info"]["n_val"]}
