"""`slimdeploy export`: ONNX export behind the numerical parity gate (exit 1 and no file when it fails)."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from ..errors import SlimdeployError
from .common import add_model_args, load_model_and_input

EXIT_PARITY_FAILED = 1


def register(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX and check numerical parity with PyTorch")
    add_model_args(p)
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--dynamic-batch", action="store_true", help="make the batch dimension dynamic")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export import export_onnx, verify_onnx

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
