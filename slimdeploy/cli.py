"""The `slimdeploy` command. Every input is checked here, at the edge; errors exit with code 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

from .commands.profile import add_runtime_args, runtime_from_args
from .errors import SlimdeployError

EXIT_BAD_INPUT = 2
EXIT_PARITY_FAILED = 1


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="torchvision:NAME, package.module:factory, or a directory written by slimdeploy")
    p.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224 (default for torchvision "
                                         "classifiers and saved models: the model's own)")
    p.add_argument("--ignore", action="append", default=[], metavar="LAYER",
                   help="module path of a layer that must not change (repeatable)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading a pickled model directory (runs code from the file; only if trusted)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimdeploy", description=(
        "Make a trained PyTorch model fit a latency budget on its deployment runtime: find its channel "
        "groups, prune them physically to chosen widths, export to ONNX with a parity check."))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="list prunable channel groups, MACs, params, structure fingerprint")
    _model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("prune", help="remove channels so every group has the given width")
    _model_args(p)
    p.add_argument("--widths", required=True,
                   help="widths.json, a uniform multiplier such as 0.5, or random:SEED")
    p.add_argument("--importance", default="l2", choices=["l2", "l1", "bn", "taylor"],
                   help="which channels stay (taylor uses gradients on a random batch)")
    p.add_argument("--align", type=int, default=8, help="channel multiple for multipliers/random (default 8)")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("export", help="export to ONNX and check numerical parity with PyTorch")
    _model_args(p)
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--dynamic-batch", action="store_true", help="make the batch dimension dynamic")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("compress", help="prune to a measured latency budget, fine-tune, export, verify, report")
    p.add_argument("model", metavar="MODEL",
                   help="torchvision:NAME, package.module:factory, or a directory written by slimdeploy")
    p.add_argument("--latency", required=True, help="budget: fraction of the original (0.5x) or milliseconds (5ms)")
    p.add_argument("--macs", help="extra cap on MACs: fraction (0.5x) or count (300M)")
    p.add_argument("--params", help="extra cap on parameters: fraction (0.5x) or count (2M)")
    p.add_argument("--data", help="digits, mnist5k, fashion-mnist or package.module:factory -> (train, val)")
    p.add_argument("--method", default="uniform", choices=["uniform", "greedy"])
    p.add_argument("--finetune-epochs", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--importance", default="l2", choices=["l2", "l1", "bn", "taylor"])
    add_runtime_args(p)
    p.add_argument("--latency-model", default="fit",
                   help="fit (measure sampled widths, search on the fitted model; default), measure (time every "
                        "candidate), or a directory from `slimdeploy profile`")
    p.add_argument("--samples", type=int, default=24, help="configurations measured to fit the latency model")
    p.add_argument("--db", help="latency database (default: the user cache, or $SLIMDEPLOY_DB)")
    p.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors (and --json)")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("demo", help="the main job on an embedded default (ResNet-8 on MNIST digits), offline")
    p.add_argument("--out", default="demo-out", help="output directory (default demo-out)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    p.set_defaults(func=cmd_demo)

    from .commands import agent, db, profile  # each adds its own sub-command(s)

    for module in (profile, agent, db):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore")
    try:
        return args.func(args) or 0
    except SlimdeployError as exc:
        print(f"slimdeploy: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("slimdeploy: interrupted", file=sys.stderr)
        return 130


def _load(args):
    """Resolve MODEL and its example input; everything a subcommand needs to start."""
    import torch

    from . import zoo
    from .checkpoint import load_model

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

    try:
        with torch.no_grad():
            model.eval()(example)
    except Exception as exc:  # a wrong shape surfaces as many exception types
        raise SlimdeployError(f"{name} does not run on an input of shape {tuple(example.shape)}: "
                              f"{str(exc).splitlines()[0][:200]}; check --input-shape") from None


def cmd_inspect(args) -> int:
    from .inspection import inspect

    model, example = _load(args)
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


def cmd_prune(args) -> int:
    from .analysis import analyse
    from .checkpoint import save
    from .inspection import count_macs_params
    from .prune import prune
    from .space import resolve_widths

    model, example = _load(args)
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


def cmd_export(args) -> int:
    from .export import export_onnx, verify_onnx

    model, example = _load(args)
    out = Path(args.out)
    if out.is_dir():
        raise SlimdeployError(f"--out {out} is a directory; give a file name such as {out / 'model.onnx'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".onnx", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        export_onnx(model, example, tmp, opset=args.opset, dynamic_batch=args.dynamic_batch)
        report = verify_onnx(model, tmp, example, atol=args.atol, rtol=args.rtol)
        result = {"out": str(out), "opset": args.opset, "dynamic_batch": args.dynamic_batch,
                  "parity": report.to_json()}
        if report.passed:
            os.replace(tmp, out)
        print(json.dumps(result, indent=2))
        if not report.passed:
            print(f"slimdeploy: error: {report.summary()}; {out} was not written", file=sys.stderr)
            return EXIT_PARITY_FAILED
        return 0
    finally:
        tmp.unlink(missing_ok=True)


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, threads=args.threads)
    return 0


def cmd_compress(args) -> int:
    from . import zoo
    from .pipeline import compress

    if args.finetune_epochs < 0 or args.batch_size <= 0 or args.samples < 8:
        raise SlimdeployError("--finetune-epochs must be >= 0, --batch-size > 0 and --samples >= 8")
    runtime = runtime_from_args(args)
    say = (lambda text: None) if args.quiet or args.json else (lambda text: print(text, file=sys.stderr))
    report = compress(args.model, args.out, latency=args.latency, macs=args.macs, params=args.params,
                      data=args.data, method=args.method, finetune_epochs=args.finetune_epochs, lr=args.lr,
                      batch_size=args.batch_size, runtime=runtime, latency_model=args.latency_model,
                      profile_samples=args.samples, db=args.db,
                      input_shape=zoo.parse_input_shape(args.input_shape) if args.input_shape else None,
                      importance=args.importance, say=say)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    elif not args.quiet:
        from .report import markdown

        print(markdown(report))
        print(f"files: {args.out}/model.onnx, {args.out}/widths.json, {args.out}/report.json, {args.out}/report.md; "
              f"slimdeploy.load('{args.out}') loads the PyTorch model")
    return 0
