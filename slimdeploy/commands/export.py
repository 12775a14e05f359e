"""`slimdeploy export`: ONNX export behind the numerical parity gate (exit 1 and no file when it fails)."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from ..config import add_config_arg
from ..errors import SlimdeployError
from ..parity import STOL
from .common import add_model_args, load_model_and_input

EXIT_PARITY_FAILED = 1


def register(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX (or a TensorRT engine) and check numerical parity with PyTorch")
    add_model_args(p)
    p.add_argument("--format", default="onnx", choices=["onnx", "tensorrt"])
    p.add_argument("--out", required=True, help="output file (.onnx, or .engine for tensorrt)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--dynamic-batch", action="store_true", help="make the batch dimension dynamic (ONNX)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"], help="TensorRT engine precision")
    p.add_argument("--workspace-mb", type=int, help="TensorRT builder workspace (MiB)")
    p.add_argument("--atol", type=float, help="parity: absolute tolerance (default 1e-4; 1e-2 for fp16 engines)")
    p.add_argument("--rtol", type=float, help="parity: relative tolerance (default 1e-3; 1e-2 for fp16 engines)")
    p.add_argument("--stol", type=float, default=STOL,
                   help="parity: an element also passes within STOL x its output's range (default %(default)s; 0 turns it off)")
    add_config_arg(p, "export")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.format == "tensorrt":
        return _run_tensorrt(args)
    from ..export import export_onnx, verify_onnx

    args.atol = 1e-4 if args.atol is None else args.atol
    args.rtol = 1e-3 if args.rtol is None else args.rtol
    model, example = load_model_and_input(args)
    out = Path(args.out)
    if out.is_dir():
        raise SlimdeployError(f"--out {out} is a directory; give a file name such as {out / 'model.onnx'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".onnx", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        export_onnx(model, example, tmp, opset=args.opset, dynamic_batch=args.dynamic_batch)
        report = verify_onnx(model, tmp, example, atol=args.atol, rtol=args.rtol, stol=args.stol)
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


def _run_tensorrt(args) -> int:
    from ..export_tensorrt import export_tensorrt
    from ..runtimes import get_runtime

    get_runtime("tensorrt", {"precision": args.precision}).check_compile()  # before any work
    model, example = load_model_and_input(args)
    out = Path(args.out)
    report = export_tensorrt(model, example, out, precision=args.precision, workspace_mb=args.workspace_mb,
                             atol=args.atol, rtol=args.rtol, stol=args.stol)
    print(json.dumps({"out": str(out), "format": "tensorrt", "precision": args.precision,
                      "parity": report.to_json()}, indent=2))
    if not report.passed:
        print(f"slimdeploy: error: {report.summary()}; {out} was not written", file=sys.stderr)
        return EXIT_PARITY_FAILED
    return 0
