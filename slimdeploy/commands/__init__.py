"""The `slimdeploy` sub-commands, one module each; every module has ``register(subparsers)``."""
from __future__ import annotations

import importlib

# In the order `slimdeploy --help` lists them.
COMMANDS = ("inspect", "prune", "export", "compress", "supernet", "search", "profile", "db", "agent", "demo")


def register_all(sub) -> None:
    """Add every command's parser to `sub` (argparse sub-parsers)."""
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
