"""`slimdeploy demo`: the main job on the embedded default, offline."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job on an embedded default (ResNet-8 on MNIST digits), offline")
    p.add_argument("--out", default="demo-out", help="output directory (default demo-out)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo

    run_demo(args.out, threads=args.threads)
    return 0
