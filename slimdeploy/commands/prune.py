"""`slimdeploy prune`: remove channels physically so every group has the given width."""
from __future__ import annotations

import json

from .common import add_model_args, load_model_and_input


def register(sub) -> None:
    from ..importance import IMPORTANCES

    p = sub.add_parser("prune", help="remove channels so every group has the given width")
    add_model_args(p)
    p.add_argument("--widths", required=True,
                   help="widths.json, a uniform multiplier such as 0.5, or random:SEED")
    p.add_argument("--importance", default="l2", choices=sorted(IMPORTANCES),
                   help="which channels stay (taylor uses gradients on a random batch)")
    p.add_argument("--align", type=int, default=8, help="channel multiple for multipliers/random (default 8)")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis import analyse
    from ..checkpoint import save
    from ..inspection import count_macs_params
    from ..prune import prune
    from ..space import resolve_widths

    model, example = load_model_and_input(args)
    analysis = analyse(model, example, args.ignore)
    widths = resolve_widths(analysis.space, args.widths, align=args.align)
    batch = example.repeat(8, *[1] * (example.dim() - 1)).normal_() if args.importance == "taylor" else None
    pruned = prune(model, widths, example, importance=args.importance, batch=batch,
                   ignored=args.ignore, analysis=analysis)
    macs0, params0 = count_macs_params(model, example)
    macs1, params1 = count_macs_params(pruned, example)
    save(pruned, args.out, allow_pickle=args.allow_pickle)
    print(json.dumps({"out": str(args.out), "structure": widths.structure,
                      "macs": {"before": macs0, "after": macs1}, "params": {"before": params0, "after": params1},
                      "groups": len(widths.widths)}, indent=2))
    return 0
