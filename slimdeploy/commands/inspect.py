"""`slimdeploy inspect`: a model's prunable channel groups, MACs, params and structure fingerprint."""
from __future__ import annotations

import json

from .common import add_model_args, load_model_and_input


def register(sub) -> None:
    p = sub.add_parser("inspect", help="list prunable channel groups, MACs, params, structure fingerprint")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inspection import inspect

    model, example = load_model_and_input(args)
    report = inspect(model, example, args.ignore)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model      {report['model_class']}")
    print(f"structure  {report['structure']}")
    print(f"input      {tuple(report['input_shape'])}")
    print(f"MACs       {report['macs'] / 1e6:,.1f} M")
    print(f"params     {report['params'] / 1e6:,.3f} M")
    print(f"groups     {len(report['groups'])}")
    width = max([len(g["name"]) for g in report["groups"]] + [5])
    print(f"  {'group':<{width}}  width  step  layers")
    for g in report["groups"]:
        print(f"  {g['name']:<{width}}  {g['width']:>5}  {g['divisor']:>4}  {len(g['layers'])}")
    for note in report["notes"]:
        print(f"note: {note}")
    return 0
