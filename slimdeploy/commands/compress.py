"""`slimdeploy compress`: prune to measured latency budgets, fine-tune, export, verify, report."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import add_config_arg
from ..errors import BudgetMissed, SlimdeployError
from .common import (add_budget_args, add_model_args, add_output_args, add_runtime_args, add_search_args,
                     runtime_from_args, say_for, search_settings)


def register(sub) -> None:
    from ..importance import IMPORTANCES

    p = sub.add_parser("compress", help="prune to a measured latency budget, fine-tune, export, verify, report")
    add_model_args(p)
    add_budget_args(p)
    add_search_args(p)
    g = p.add_argument_group("data and training")
    g.add_argument("--data", help="digits, mnist5k, fashion-mnist or package.module:factory -> (train, val)")
    g.add_argument("--finetune-epochs", type=int, default=0, help="fine-tuning epochs of each delivered model")
    g.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--importance", default="l2", choices=sorted(IMPORTANCES),
                   help="which channels a pruned group keeps (and a supernet's channel order)")
    g.add_argument("--supernet", metavar="DIR", help="search on this trained supernet (`slimdeploy supernet "
                                                     "train`) instead of training one")
    g.add_argument("--supernet-epochs", type=int, default=1,
                   help="epochs of supernet training for methods that search on one (default 1)")
    g.add_argument("--supernet-lr", type=float, default=0.01)
    p.add_argument("--retries", type=int, default=2,
                   help="searches again, with the target tightened by the miss, up to this many times when a "
                        "delivered model measures over budget (default 2; raise it on a noisy machine); with "
                        "several budgets, one still missed leaves the others delivered and exits with code 2")
    add_runtime_args(p)
    add_output_args(p)
    add_config_arg(p, "compress")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import zoo
    from ..pipeline import compress

    if args.samples < 8:
        raise SlimdeployError("--samples must be >= 8")
    runtime = runtime_from_args(args)
    settings = {**search_settings(args), "data": args.data, "finetune_epochs": args.finetune_epochs,
                "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed, "importance": args.importance,
                "supernet": args.supernet, "supernet_epochs": args.supernet_epochs, "supernet_lr": args.supernet_lr,
                "retries": args.retries, "runtime": runtime}
    shape = zoo.parse_input_shape(args.input_shape) if args.input_shape else None
    try:
        report = compress(args.model, args.out, latency=args.latency, macs=args.macs, params=args.params,
                          input_shape=shape, ignore=args.ignore, say=say_for(args), config=args.effective_config,
                          **settings)
    except BudgetMissed as exc:  # several budgets, some delivered: show them, then the miss (exit code 2)
        if getattr(exc, "summary", None) is not None:
            _show(args, exc.summary)
        raise
    _show(args, report)
    return 0


def _show(args, report: dict) -> None:
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    elif not args.quiet:
        from ..report import markdown

        if "budgets" in report:
            print((Path(args.out) / "summary.md").read_text())
            print(f"files: {args.out}/summary.md, summary.json, summary.png; one folder per budget with model.onnx, "
                  f"widths.json, report.json, report.md; config.toml repeats the run (--config)")
        else:
            print(markdown(report))
            print(f"files: {args.out}/model.onnx, {args.out}/widths.json, {args.out}/report.json, "
                  f"{args.out}/report.md, {args.out}/config.toml (--config repeats the run); slimdeploy.load('{args.out}') "
                  f"loads the PyTorch model")
