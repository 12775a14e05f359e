"""`slimdeploy search`: widths for latency budgets, scored on shared weights (a supernet, ...); resumable."""
from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

from ..config import add_config_arg
from ..errors import SlimdeployError
from .common import (add_budget_args, add_model_args, add_runtime_args, add_search_args, load_model_and_input,
                     runtime_from_args, say_for, search_settings, write_config)


def register(sub) -> None:
    p = sub.add_parser("search", help="choose widths for latency budgets on shared weights (front.json, "
                                      "front.png, widths.json)")
    add_model_args(p)
    p.add_argument("--supernet", metavar="DIR", help="a trained supernet (`slimdeploy supernet train`); without it, "
                                                    "the method's shared weights are trained here first")
    p.add_argument("--data", required=True, help="the data the weights were trained on (its held-out search split "
                                                 "scores the candidates)")
    p.add_argument("--seed", type=int, help="data split seed (default: the supernet's training seed)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1, help="epochs of shared-weight training when no --supernet is "
                                                         "given (default 1)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate of that training")
    add_budget_args(p)
    add_search_args(p, default="evolution")
    add_runtime_args(p)
    p.add_argument("--out", required=True, help="directory for widths.json, front.json, front.png")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search in --out")
    p.add_argument("--quiet", action="store_true")
    add_config_arg(p, "search")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis import analyse
    from ..budget import parse_budgets
    from ..channels import ChannelMap
    from ..costs import CostModel
    from ..inspection import count_macs_params
    from ..latency.oracle import MeasuredLatency
    from ..options import CompressOptions
    from ..problem import check_latency_source, latency_source, search_costs, search_limits
    from ..report import write_front
    from ..scoring import scoring_data
    from ..search import SearchLog, SearchProblem, get_searcher
    from ..space import atomic_write_text
    from ..shared_weights import WeightsContext, provide
    from ..supernet.store import read_manifest
    from ..train import distributed as dist

    settings = search_settings(args)
    options = CompressOptions.build(**settings, runtime=runtime_from_args(args), data=args.data,
                                    batch_size=args.batch_size, supernet=args.supernet, supernet_epochs=args.epochs,
                                    supernet_lr=args.lr)
    check_latency_source(options.latency.latency_model)
    budgets = parse_budgets(args.latency, args.macs, args.params)
    searcher = get_searcher(args.method, **options.search.search_options)
    if not searcher.shared_weights:
        raise SlimdeployError(f"search method {args.method!r} scores the original's weights; `search` is for "
                              f"shared-weight methods ({', '.join(_shared_methods())}); use compress --method "
                              f"{args.method}")
    out = Path(args.out)
    distributed = dist.init_from_env()
    if distributed and (options.latency.latency_model in ("fit", "measure")
                        or not all(b.latency.relative for b in budgets)):
        raise SlimdeployError("under torchrun, search scores on every process but measures nowhere: give "
                              "--latency-model DIR (from `slimdeploy profile`, run in one process) and budgets as "
                              "fractions such as 0.5x")
    if dist.is_main():
        _prepare(out, args.resume)
    dist.barrier()
    say = say_for(args) if dist.is_main() else (lambda text: None)
    model, example = load_model_and_input(args)
    analysis = analyse(model, example, args.ignore)
    trained = read_manifest(args.supernet).get("training", {}) if args.supernet and searcher.shared_weights == \
        "supernet" else {}
    seed = args.seed if args.seed is not None else trained.get("config", {}).get("seed", 0)
    options.train.seed = seed
    data = scoring_data(args.data, tuple(example.shape), args.batch_size, seed)
    if options.search.proxy:  # the weights are trained on the proxy (Width Transfer)
        from ..transfer.setup import with_proxy

        searcher = with_proxy(searcher, WeightsContext(model, example, analysis, data, options, say,
                                                       workdir=out / searcher.shared_weights), options.latency.runtime)
    cost_model = CostModel.build(model, example, ChannelMap.build(model, analysis))
    macs0, params0 = count_macs_params(model, example)
    rt = options.latency.runtime
    with contextlib.closing(MeasuredLatency(model, example, analysis, rt)) as measured:
        absolute = not all(b.latency.relative for b in budgets)
        original_ms = rt.measure(measured.reference, tuple(example.shape)).median_ms if absolute else 1.0
        latency, offered, info = latency_source(options.latency, model, example, analysis, rt, measured,
                                                options.search, say)
        shared = None
        if options.search.proxy:
            score = searcher.score
        else:
            shared = provide(searcher.shared_weights, WeightsContext(
                model, example, analysis, data, options, say, workdir=out / searcher.shared_weights,
                latency=latency, offered=offered))
            score = functools.cache(shared.scorer(data["calibration"], data["held_out"]))
        costs = search_costs(cost_model, latency)
        s = options.search
        evaluated, chosen, targets, results = [], [], [], []
        for budget in budgets:
            limits = budget.resolve(original_ms, macs0, params0)
            target = limits["latency_ms"] / original_ms
            log = SearchLog(out / f"search-{budget.label}.json", {"method": args.method, "options": s.search_options,
                                                                 "budget": budget.to_json(), "align": s.align,
                                                                 "min_fraction": s.min_fraction,
                                                                 **({"proxy": s.proxy} if s.proxy else {})},
                            writable=dist.is_main())
            problem = SearchProblem(analysis.space, costs, search_limits(limits, target), score, s.align,
                                    s.min_fraction, offered, say, log=log, shared=shared)
            say(f"searching ({args.method}) for latency <= {target:.3f}x ({budget.latency.text})")
            result = searcher.search(problem)
            name = "widths.json" if len(budgets) == 1 else f"widths-{budget.label}.json"
            if dist.is_main():
                result.widths.save(out / name)
                if s.proxy:
                    searcher.save(out / name.replace("widths", "transfer"))
            evaluated += result.evaluated
            chosen.append((budget.label, result.best))
            targets.append(target)
            results.append((budget.label, result))
    if not dist.is_main():
        return 0
    front = write_front(out, evaluated, chosen, targets, f"{args.model}: {args.method} on shared weights")
    if hasattr(searcher, "write_figures"):  # a method's own figures (adaptive: the truncation curve)
        searcher.write_figures(out, results, f"{args.model}: {args.method}")
    summary = {"out": str(out), "method": args.method, "latency_source": info.get("kind"),
               "evaluated": len(front["candidates"]), "pareto": sum(c["pareto"] for c in front["candidates"]),
               "chosen": {label: {"costs": c["costs"], "score": c["score"]} for label, c in front["chosen"].items()}}
    atomic_write_text(out / "search.json", json.dumps({**summary, "latency": info}, indent=1, default=str) + "\n")
    write_config(args, out)
    print(json.dumps(summary, indent=2))
    return 0


def _shared_methods() -> list[str]:
    from ..search import SEARCHERS

    return sorted(name for name, cls in SEARCHERS.items() if cls.shared_weights)


def _prepare(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SlimdeployError(f"{out} is a file; --out needs a directory")
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise SlimdeployError(f"{out} is not empty; pass --resume to continue a search there, or choose another "
                              f"--out")
    out.mkdir(parents=True, exist_ok=True)
