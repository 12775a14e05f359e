"""The `slimdeploy` command. Every input is checked at the edge; a user's mistake exits with code 2.

Each sub-command lives in `slimdeploy/commands/` and registers its own parser; this module only
builds the parser from them and turns errors into one line on stderr.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from .commands import register_all
from .config import ConfigParser
from .errors import SlimdeployError

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = ConfigParser(prog="slimdeploy", description=(
        "Make a trained PyTorch model fit a latency budget on its deployment runtime: find its channel "
        "groups, search widths under measured latency (optionally on a trained supernet), prune them "
        "physically, fine-tune, export to ONNX with a parity check."))
    register_all(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    try:
        args = build_parser().parse_args(argv)  # a --config file's mistakes are SlimdeployErrors too
        return args.func(args) or 0
    except SlimdeployError as exc:
        print(f"slimdeploy: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("slimdeploy: interrupted", file=sys.stderr)
        return 130
