"""compress(): inspect → measure → (train a supernet) → search under each budget → deliver → report.

The search scores candidates with a latency model fitted to measurements on the runtime (or, if
asked, measures every candidate), counts MACs and params from the widths, and estimates accuracy
either on the original's weights (uniform, greedy) or on a supernet's shared weights (slim,
evolution, ...), trained once for every budget. Each delivered model is measured against the
original interleaved on the same runtime; if it measures over budget, the search is re-run with
a tighter target. A budget under the lowest latency the model reaches is refused before any
training. When several budgets are asked for and one is still missed, the others are delivered and
the miss is reported (`BudgetMissed`, after the output is in place). Everything is built in a
staging folder and renamed into place at the end.
"""
from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from . import tomlio, zoo
from .analysis import analyse
from .budget import Budget, parse_budgets
from .channels import ChannelMap
from .checkpoint import MANIFEST, load_model, replace_dir
from .costs import CostModel
from .delivery import Delivery, deliver
from .errors import BudgetMissed, SlimdeployError
from .html_report import write_html, write_summary_html
from .inspection import count_macs_params
from .latency.oracle import MeasuredLatency
from .options import CompressOptions
from .problem import check_latency_source, latency_source, resolve_runtime, search_costs, search_limits
from .report import write_front, write_reports, write_summary
from .scoring import original_scorer, scoring_data
from .search import LATENCY, BudgetUnreachable, SearchProblem, get_searcher
from .shared_weights import WeightsContext, provide
from .space import atomic_write_text

OUTPUT_MARKERS = (MANIFEST, "summary.json")  # what makes an existing --out one of ours, safe to replace


def compress(model: str | nn.Module, out: str | os.PathLike, latency: str | list[str] = "0.5x",
             macs: str | None = None, params: str | None = None, *, input_shape=None, ignore=(),
             say: Callable[[str], None] = print, options: CompressOptions | None = None, config: dict | None = None,
             **settings) -> dict:
    """Deliver a pruned model per latency budget whose measured latency meets it; returns the report.

    `latency` is one budget ("0.5x", "5ms") or several ("0.3x,0.5x,0.7x", or a list): several are
    searched on one latency model (and one supernet) and delivered to `out/<budget>/`, with a
    summary across budgets in `out`. `settings` are `CompressOptions` fields (method, data,
    finetune_epochs, runtime, threads, latency_model, samples, ...), or pass `options` whole.
    `config` (the CLI's options after --config and flags) is recorded as out/config.toml and in
    each report.json, so `slimdeploy compress --config out/config.toml` repeats the run.
    Returns report.json's content (one budget) or summary.json's (several).
    """
    options = options or CompressOptions.build(**settings)
    s, t, lat = options.search, options.train, options.latency
    check_latency_source(lat.latency_model)
    rt = resolve_runtime(lat.runtime, lat.threads)
    if rt.compiled_suffix:  # e.g. TensorRT: say now, in one line, when this machine cannot build engines
        rt.check_compile()
    budgets = parse_budgets(latency, macs, params)
    searcher = get_searcher(s.method, **s.search_options)
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and
                                              not any((out / m).exists() for m in OUTPUT_MARKERS))):
        raise SlimdeployError(f"{out} exists and is not a slimdeploy output; choose another --out")
    if searcher.shared_weights and not t.data:
        raise SlimdeployError(f"search method {s.method!r} trains and scores shared weights ({searcher.shared_weights})"
                              f", which needs data: pass data (CLI: --data digits|mnist5k|fashion-mnist|"
                              f"package.module:factory)")
    if isinstance(model, str):
        spec, model = model, load_model(model)
    else:
        spec = (getattr(model, zoo.META, None) or {}).get("source", type(model).__name__)
    shape = tuple(input_shape or (getattr(model, zoo.META, None) or {}).get("input_shape")
                  or zoo.default_input_shape(spec) or ())
    if not shape:
        raise SlimdeployError("cannot tell the model's input shape; pass input_shape (CLI: --input-shape)")
    data = scoring_data(t.data, shape, t.batch_size, t.seed) if t.data else None
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(t.seed))
    model.eval()

    say(f"analysing channel groups of {spec}")
    analysis = analyse(model, x, ignore)
    if s.proxy:  # Width Transfer: search on a cheap proxy; groups it cannot match fail here, before measuring
        from .transfer.setup import with_proxy

        searcher = with_proxy(searcher, WeightsContext(model, x, analysis, data, options, say), rt)
    cost_model = CostModel.build(model, x, ChannelMap.build(model, analysis))
    macs0, params0 = count_macs_params(model, x)
    measured = MeasuredLatency(model, x, analysis, rt)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    try:
        say(f"measuring the original on {rt.describe()}")
        original = rt.measure(measured.reference, shape)
        latency_fn, offered, profile_info = latency_source(lat, model, x, analysis, rt, measured, s, say)
        check_floor(budgets, original.median_ms, macs0, params0,
                    latency_fn(analysis.space.smallest(s.align, s.min_fraction)), say)
        supernet = None  # the shared weights, when the method scores on them
        if s.proxy:
            score, score_kind = searcher.score, searcher.score_kind
        elif searcher.shared_weights:
            supernet = provide(searcher.shared_weights, WeightsContext(model, x, analysis, data, options, say,
                                                                        latency=latency_fn, offered=offered))
            score, score_kind = supernet.scorer(data["calibration"], data["held_out"]), supernet.score_kind
        else:
            score, score_kind = original_scorer(model, x, analysis, data, s.importance)
        costs = search_costs(cost_model, latency_fn)
        score = functools.cache(score)  # shared by every budget and retry
        reports, searched, folders, missed = [], [], [], []
        for budget in budgets:
            target = staging / budget.label if len(budgets) > 1 else staging
            limits = budget.resolve(original.median_ms, macs0, params0)
            say(f"budget {budget.latency.text}: latency <= {limits['latency_ms']:.3f} ms")

            def problem_for(ratio: float) -> SearchProblem:
                return SearchProblem(analysis.space, costs, search_limits(limits, ratio), score, s.align,
                                     s.min_fraction, offered, say, shared=supernet)

            delivery = Delivery(spec=spec, model=model, example=x, analysis=analysis, runtime=rt, measured=measured,
                                data=data, options=options, budget=budget, limits=limits,
                                original=(original.median_ms, macs0, params0), supernet=supernet, say=say)
            try:
                result, report = deliver(delivery, searcher, problem_for, target)
            except (BudgetUnreachable, BudgetMissed) as exc:  # several budgets: deliver the others, report this one
                error = _unreachable(exc, budget, limits, original.median_ms) \
                    if isinstance(exc, BudgetUnreachable) else exc
                if len(budgets) == 1:
                    raise error from None
                say(f"budget {budget.latency.text} missed: {error}")
                missed.append({"budget": budget.label, "reason": str(error)})
                continue
            report.update(model=spec, options=options.to_json(), score={"kind": score_kind, "value": result.score})
            if config is not None:
                report["config"] = config
            report["search"].update(latency_source=profile_info, notes=result.notes + analysis.notes,
                                    latency_measurements=measured.measurements)
            if supernet is not None:
                report["search"]["supernet"] = supernet.summary()
            if s.proxy:
                report["search"]["transfer"] = searcher.save(target / "transfer.json")
            write_reports(target, report)
            reports.append(report)
            folders.append(target)
            searched.append((budget.label, result, limits["latency_ms"] / original.median_ms))
        if not reports:
            raise BudgetMissed("no budget was met: " + _listed(missed))
        front = None
        if supernet is not None:  # the accuracy–latency front the shared weights gave, every budget marked
            front = write_front(staging, [c for _, r, _ in searched for c in r.evaluated],
                                [(label, r.best) for label, r, _ in searched],
                                [ratio for _, _, ratio in searched], f"{spec}: {s.method} on shared weights")
        for folder, report, (label, _, _) in zip(folders, reports, searched):
            write_html(folder, report, front, label)
        if len(budgets) > 1:
            summary = write_summary(staging, reports, spec, missed)
            write_summary_html(staging, summary, front)
        if config is not None:
            atomic_write_text(staging / "config.toml", tomlio.dumps(config))
        replace_dir(staging, out, markers=OUTPUT_MARKERS)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        measured.close()
    if missed:
        error = BudgetMissed(f"delivered {', '.join(r['budget']['latency'] for r in reports)} to {out}, but "
                             + _listed(missed))
        error.summary = summary
        raise error
    return reports[0] if len(budgets) == 1 else summary


def _listed(missed: list[dict]) -> str:
    return "; ".join(f"{m['budget']}: {m['reason']}" for m in missed)


def check_floor(budgets: list[Budget], original_ms: float, macs0: int, params0: int, lowest: float,
                say: Callable[[str], None]) -> None:
    """Refuse a latency budget under `lowest` (the predicted ratio with every group at its narrowest)
    before anything is trained; warn about one so close to it that a measured miss has no room."""
    for budget in budgets:
        limits = budget.resolve(original_ms, macs0, params0)
        ratio = limits["latency_ms"] / original_ms
        if ratio < lowest:
            raise SlimdeployError(
                f"the budget {budget.latency.text} cannot be met: the lowest latency this model reaches is "
                f"{lowest:.3f}x of the original (predicted with every group at its narrowest width; "
                f"{lowest * original_ms:.3f} ms against a budget of {limits['latency_ms']:.3f} ms); give a "
                f"budget above it, or lower --min-width")
        if ratio < 1.1 * lowest:
            say(f"warning: the budget {budget.latency.text} is within 10 % of the lowest latency this model "
                f"reaches ({lowest:.3f}x predicted); a delivery that measures over it has little room to be "
                f"re-searched")


def _unreachable(exc: BudgetUnreachable, budget: Budget, limits: dict, original_ms: float) -> BudgetMissed:
    if exc.constraint == LATENCY:
        return BudgetMissed(
            f"the budget {budget.latency.text} cannot be met: the lowest latency the search reached is "
            f"{exc.lowest:.2f}x of the original ({exc.lowest * original_ms:.3f} ms against a budget of "
            f"{limits['latency_ms']:.3f} ms)")
    return BudgetMissed(f"the {exc.constraint} cap cannot be met: the smallest widths reach {exc.lowest:,.0f} "
                        f"against a cap of {exc.limit:,.0f}; loosen --{exc.constraint} or lower --min-width")
