"""Per-node kernel times from ONNX Runtime's profiler, each measured in its real context.

One profiled run yields a time for every (fused) node, with the shapes it ran on: far more
signal per measurement than a single end-to-end figure (shared/LATENCY-NOTES.md).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from .timer import OrtTimer

_SUFFIX = "_kernel_time"


def _channels(shapes: list[dict[str, list[int]]] | None) -> int | None:
    """Channel count (dim 1) of the first tensor in a profiler shape list, if it has one."""
    for entry in shapes or []:
        for dims in entry.values():
            return int(dims[1]) if len(dims) > 1 else None
    return None


def _kind(op: str, inputs: list[dict[str, list[int]]]) -> str:
    """Op with kernel size and depthwise-ness for convolutions (``Conv-3x3-dw``), else the op."""
    if op not in ("Conv", "FusedConv") or len(inputs) < 2:
        return op
    weight = next(iter(inputs[1].values()))
    data = next(iter(inputs[0].values()))
    if len(weight) < 4:
        return op
    depthwise = weight[1] == 1 and len(data) > 1 and data[1] > 1
    return f"Conv-{weight[2]}x{weight[3]}{'-dw' if depthwise else ''}"


def profile_nodes(artifact: Any, input_shape: Sequence[int] | None = None, runs: int = 20,
                  **timer_options: Any) -> list[dict[str, Any]]:
    """Median kernel time of every node over `runs` profiled runs (after a short warm-up).

    Returns ``[{"name", "op", "kind", "in_channels", "out_channels", "ms"}]`` in execution order,
    where the channel counts are dim 1 of the node's first input and first output as run (padded
    to the block in the blocked layout) and `kind` tells convolutions apart (``Conv-3x3-dw``).
    """
    with tempfile.TemporaryDirectory(prefix="slimdeploy-profile-") as tmp:
        config = dict(timer_options.pop("session_config", None) or {})
        timer = OrtTimer(artifact, input_shape=input_shape, session_config=config,
                         profile_prefix=os.path.join(tmp, "profile"), **timer_options)
        timer.warm_up(3, 0.1)
        timer.time_runs(runs)
        path = timer.session.end_profiling()
        with open(path) as f:
            events = json.load(f)
    times: dict[str, list[float]] = defaultdict(list)
    info: dict[str, dict[str, Any]] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith(_SUFFIX):
            continue
        node = name[: -len(_SUFFIX)]
        times[node].append(event["dur"] / 1000.0)
        if node not in info:
            args = event.get("args", {})
            inputs = args.get("input_type_shape") or []
            info[node] = {"name": node, "op": args.get("op_name", "?"),
                          "in_channels": _channels(inputs), "out_channels": _channels(args.get("output_type_shape")),
                          "kind": _kind(args.get("op_name", "?"), inputs)}
    # The last `runs` occurrences are the timed ones (warm-up runs are profiled too).
    return [{**info[n], "ms": float(np.median(times[n][-runs:]))} for n in info]
