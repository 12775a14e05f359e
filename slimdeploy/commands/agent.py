"""`slimdeploy agent`: serve latency measurements on this device to a search running elsewhere."""
from __future__ import annotations

import argparse
import re

from ..errors import SlimdeployError

_UNITS = {"": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def parse_bytes(text: str) -> int:
    """``268435456``, ``256M``, ``256MiB``, ``1G`` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"expected a size such as 268435456, 256M or 1G, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def register(sub) -> None:
    """Add this command's parser to `sub` (argparse sub-parsers)."""
    from ..agent.limits import MEMORY_SHARE, default_max_memory, size_text
    from ..agent.server import DEFAULT_PORT, DEFAULT_QUEUE, DEFAULT_REQUEST_TIMEOUT, TOKEN_ENV

    p = sub.add_parser(
        "agent", help="measure models on this device for a search elsewhere (--runtime remote:http[s]://HOST:PORT)",
        description="Serve latency measurements over HTTP, or HTTPS with --tls-cert. Needs only onnxruntime "
                    "(no torch). Each measurement runs in its own process under --max-memory and "
                    "--max-cpu-seconds. The token comes from --token-file or $" + TOKEN_ENV + "; the searching host "
                    "passes the same token.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; beyond loopback use --tls-cert/--tls-key, or "
                        "an SSH tunnel)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--token-file", help=f"file holding the shared token (default: ${TOKEN_ENV})")
    p.add_argument("--max-bytes", type=parse_bytes, default="256MiB",
                   help="largest model accepted, e.g. 64M (default 256MiB); larger ones get 413")
    p.add_argument("--queue", type=int, default=DEFAULT_QUEUE,
                   help=f"requests that may wait while one is measured (default {DEFAULT_QUEUE}); more get 429")
    p.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT,
                   help=f"seconds one measurement may take before it is stopped with 504 "
                        f"(default {DEFAULT_REQUEST_TIMEOUT:g})")
    p.add_argument("--threads", type=int,
                   help="intra-op threads when a request does not say (default: every core the agent may use)")
    default_memory = default_max_memory()
    shown = f"{size_text(default_memory)}, " if default_memory else ""
    p.add_argument("--max-memory", type=parse_bytes, default=default_memory,
                   help=f"address space one measuring process may use, e.g. 2G (default {shown}{MEMORY_SHARE:.0%}% "
                        f"of this device's RAM); a model that needs more gets 507")
    p.add_argument("--max-cpu-seconds", type=float,
                   help="CPU seconds one measurement may use, all its threads together (default: "
                        "--request-timeout x the cores the agent may use); past it: 504")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (chain); needs --tls-key")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (unencrypted PEM)")
    p.set_defaults(func=cmd_agent)


def cmd_agent(args) -> int:
    from ..agent.server import AgentConfig, load_token, serve

    if args.token_file is not None and not args.token_file.strip():
        raise SlimdeployError("--token-file needs a path")
    config = AgentConfig(token=load_token(args.token_file), host=args.host, port=args.port,
                         max_bytes=args.max_bytes, queue=args.queue, request_timeout=args.request_timeout,
                         threads=args.threads, max_memory=args.max_memory, max_cpu_seconds=args.max_cpu_seconds,
                         tls_cert=args.tls_cert, tls_key=args.tls_key)
    return serve(config)
