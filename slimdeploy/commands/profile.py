"""`slimdeploy profile` (fit a latency model on a runtime) and `slimdeploy predict` (query one)."""
from __future__ import annotations

import json
import sys

from ..config import add_config_arg
from ..errors import SlimdeployError
from .common import (add_model_args, add_runtime_args, add_sampling_arg, load_model_and_input, runtime_from_args,
                     write_config)


def register(sub) -> None:
    p = sub.add_parser("profile", help="measure sampled widths on a runtime and fit a latency model, "
                                       "validated on held-out configurations")
    add_model_args(p)
    add_runtime_args(p)
    p.add_argument("--samples", type=int, default=60, help="width configurations to measure (default 60)")
    p.add_argument("--test-fraction", type=float, default=0.25,
                   help="share of configurations held out for validation (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled configurations")
    add_sampling_arg(p)
    p.add_argument("--db", help="latency database (default: the user cache, or $SLIMDEPLOY_DB)")
    p.add_argument("--out", required=True, help="directory for latency_model.json, validation.json, staircase.json")
    add_config_arg(p, "profile")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("predict", help="predicted latency of widths from a fitted latency model")
    p.add_argument("profile_dir", metavar="DIR", help="directory written by `slimdeploy profile`")
    p.add_argument("--widths", required=True, help="widths.json for the profiled model")
    p.set_defaults(func=cmd_predict)


def cmd_profile(args) -> int:
    from ..analysis import analyse
    from ..latency.db import LatencyDB
    from ..latency.profile import build_profile
    from ..progress import stderr_say

    if args.samples < 8:
        raise SlimdeployError(f"--samples must be at least 8, got {args.samples}")
    if not 0 <= args.test_fraction < 0.5:
        raise SlimdeployError(f"--test-fraction must be in [0, 0.5), got {args.test_fraction}")
    runtime = runtime_from_args(args)
    model, example = load_model_and_input(args)
    analysis = analyse(model, example, args.ignore)

    say = stderr_say()
    say(f"profiling {args.model} on {runtime.describe()}: {args.samples} configurations "
        f"+ the full and the smallest")
    with LatencyDB(args.db) as db:
        profile = build_profile(model, example, analysis, runtime, samples=args.samples,
                                test_fraction=args.test_fraction, seed=args.seed, db=db, say=say,
                                sampling=args.sampling)
    profile.write(args.out)
    write_config(args, args.out)
    v = profile.validation
    summary = {k: v.get(k) for k in ("within_5pct", "within_10pct", "mape", "spearman", "n_train", "n_test",
                                     "within_5pct_corrected", "rms_error", "rms_error_model", "noise_floor",
                                     "noise_warning", "features")}
    summary["macs_baseline"] = v.get("macs_baseline")
    summary["cost"] = profile.cost
    summary["groups_saving_nothing"] = sorted(g for g, s in profile.staircase.items() if s["saves_nothing"])
    summary["out"] = args.out
    print(json.dumps(summary, indent=2))
    if v.get("noise_warning"):
        say(f"warning: {v['noise_warning']}")
    return 0


def cmd_predict(args) -> int:
    from pathlib import Path

    from ..latency.predictor import LatencyModel
    from ..space import Widths

    model = LatencyModel.load(Path(args.profile_dir) / "latency_model.json")
    widths = Widths.load(args.widths)
    if widths.structure != model.structure:
        raise SlimdeployError(f"{args.widths} is for structure {widths.structure}, but the latency model in "
                              f"{args.profile_dir} was fitted for {model.structure}")
    for name, value in widths.widths.items():
        if name in model.groups and not 1 <= value <= model.groups[name]:
            raise SlimdeployError(f"width {value} of group {name!r} is outside 1..{model.groups[name]}")
    result = model.explain(widths.widths)
    if result["out_of_range"]:
        print(f"slimdeploy: warning: outside the fitted range in {len(result['out_of_range'])} group(s) "
              f"({', '.join(result['out_of_range'][:5])}); the prediction is an extrapolation", file=sys.stderr)
    print(json.dumps(result))
    return 0
