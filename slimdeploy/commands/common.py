"""Argument helpers every command shares: the model options, runtime options, budgets, output."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from ..errors import SlimdeployError

__all__ = ["add_budget_args", "add_model_args", "add_output_args", "add_runtime_args", "add_search_args",
           "load_model_and_input", "runtime_from_args", "say_for", "search_settings"]


def add_model_args(p: argparse.ArgumentParser) -> None:
    """MODEL and the options every command that takes a model has: --input-shape, --ignore, --allow-pickle."""
    p.add_argument("model", metavar="MODEL",
                   help="torchvision:NAME, package.module:factory, or a directory written by slimdeploy")
    p.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224 (default for torchvision "
                                         "classifiers and saved models: the model's own)")
    p.add_argument("--ignore", action="append", default=[], metavar="LAYER",
                   help="module path of a layer that must not change (repeatable)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading a pickled model directory (runs code from the file; only if trusted)")


def add_runtime_args(p: argparse.ArgumentParser, default: str = "onnxruntime") -> None:
    """--runtime, --threads and repeatable --runtime-option key=value."""
    p.add_argument("--runtime", default=default,
                   help="runtime plugin: onnxruntime, torch, tensorrt, or remote:http://HOST:PORT (an agent)")
    p.add_argument("--threads", type=int, help="runtime intra-op threads (default: all cores)")
    p.add_argument("--runtime-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a runtime setting, e.g. optimization=basic (repeatable)")


def add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--latency", required=True,
                   help="budget: a fraction of the original (0.5x) or milliseconds (5ms); several, comma-separated "
                        "(0.3x,0.5x,0.7x), are delivered from one search set-up")
    p.add_argument("--macs", help="extra cap on MACs: fraction (0.5x) or count (300M)")
    p.add_argument("--params", help="extra cap on parameters: fraction (0.5x) or count (2M)")


def add_search_args(p: argparse.ArgumentParser, default: str = "uniform") -> None:
    """--method (choices from the searcher registry), --search-option, the width grid, latency source."""
    from ..search import SEARCHERS

    p.add_argument("--method", default=default, choices=sorted(SEARCHERS),
                   help=f"search method (default {default}); "
                        + "; ".join(f"{n}: {(c.__doc__ or '').strip().splitlines()[0].rstrip('.')}" for n, c in sorted(SEARCHERS.items())))
    p.add_argument("--search-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the search method, e.g. population=30 (repeatable; unknown keys list the "
                        "known ones)")
    p.add_argument("--align", type=int, default=8, help="widths are multiples of this (default 8)")
    p.add_argument("--min-width", type=float, default=None,
                   help="narrowest width a group may take, as a fraction of its full width (default 0.2)")
    p.add_argument("--latency-model", default="fit",
                   help="fit (measure sampled widths, search on the fitted model; default), measure (time every "
                        "candidate), or a directory from `slimdeploy profile`")
    p.add_argument("--samples", type=int, default=24, help="configurations measured to fit the latency model")
    add_sampling_arg(p)
    p.add_argument("--db", help="latency database (default: the user cache, or $SLIMDEPLOY_DB)")
    p.add_argument("--proxy", metavar="KEY=VALUE,...",
                   help="search on a cheap proxy and project its widths onto the model (Width Transfer), e.g. "
                        "width=0.5,depth=min,resolution=0.5,data=0.2; keys: width, depth (min or N), resolution "
                        "(fraction or Npx), data, epochs, stack (last|average|interpolate), cost (target|proxy)")


def add_sampling_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampling", default="covering", choices=("covering", "adaptive"),
                   help="covering: --samples configurations spread over every group's range (default); adaptive: "
                        "half of them, then batches where the fitted model is least certain until its held-out "
                        "error stops improving (--samples is then the most measured)")


def search_settings(args) -> dict:
    """The search-related settings of `CompressOptions` from parsed arguments."""
    from ..search import parse_search_options

    settings = {"method": args.method, "search_options": parse_search_options(args.method, args.search_option),
                "align": args.align, "latency_model": args.latency_model, "samples": args.samples,
                "sampling": args.sampling, "db": args.db}
    if args.min_width is not None:
        settings["min_fraction"] = args.min_width
    if args.proxy is not None:  # checked by CompressOptions.check, before any work
        settings["proxy"] = args.proxy
    return settings


def add_output_args(p: argparse.ArgumentParser, what: str = "output directory (written atomically)") -> None:
    p.add_argument("--out", required=True, help=what)
    p.add_argument("--quiet", action="store_true", help="print nothing but errors (and --json)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def say_for(args) -> Callable[[str], None]:
    """Progress on stderr (live bars on a terminal, plain lines otherwise), or nothing with --quiet/--json."""
    from ..progress import stderr_say

    if getattr(args, "quiet", False) or getattr(args, "json", False):
        return lambda text: None
    return stderr_say()


def runtime_from_args(args):
    """The `Runtime` the arguments name, options checked."""
    from ..runtimes import get_runtime

    options = {}
    for item in args.runtime_option:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SlimdeployError(f"--runtime-option {item!r} must look like key=value")
        options[key.strip()] = value.strip()
    if args.threads is not None:
        if args.threads < 1:
            raise SlimdeployError(f"--threads must be a positive integer, got {args.threads}")
        options["threads"] = args.threads
    return get_runtime(args.runtime, options)


def load_model_and_input(args):
    """Resolve MODEL and its example input; everything a model command needs to start.

    A spec whose weights are random (torchvision:NAME) is built from a fixed seed, so two runs of
    a command start from the same model (and a resumed run from the one it was started with).
    """
    import torch

    from .. import zoo
    from ..checkpoint import load_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = load_model(args.model, allow_pickle=args.allow_pickle)
    meta = getattr(model, zoo.META, None) or {}
    if args.input_shape:
        shape = zoo.parse_input_shape(args.input_shape)
    else:
        shape = meta.get("input_shape") or zoo.default_input_shape(meta.get("source"))
        if shape is None:
            raise SlimdeployError(f"cannot tell the input shape of {args.model}; pass --input-shape, "
                                  f"e.g. --input-shape 1,3,224,224")
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    _check_forward(model, example, args.model)
    return model, example


def _check_forward(model, example, name) -> None:
    import torch

    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    except Exception as exc:  # a wrong shape surfaces as many exception types
        raise SlimdeployError(f"{name} does not run on an input of shape {tuple(example.shape)}: "
                              f"{str(exc).splitlines()[0][:200]}; check --input-shape") from None
    finally:
        model.train(was_training)


def write_config(args, out: str | Path) -> None:
    """`out/config.toml`: this command's options in effect (after --config and flags); --config repeats the run."""
    from .. import tomlio
    from ..space import atomic_write_text

    config = {k: v for k, v in (getattr(args, "effective_config", None) or {}).items() if k not in ("config", "resume")}
    if config:
        atomic_write_text(Path(out) / "config.toml", tomlio.dumps(config))
