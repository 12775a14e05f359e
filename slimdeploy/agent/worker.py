"""The agent's measuring child process: one model in on stdin, one JSON line out (no torch, no pickle).

Started as ``python -c WORKER_CODE MAX_MEMORY MAX_CPU_SECONDS`` (see `limits.child_args`): the
limits are set on this process before anything else is read or imported.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from slimdeploy.errors import SlimdeployError

from . import limits
from .requests import MEASURING_RUNTIME

WORKER_CODE = ("import sys; from slimdeploy.agent.worker import worker_main; "
               "raise SystemExit(worker_main(sys.argv[1:]))")


def worker_main(limit_args: list[str] | None = None) -> int:
    """Child process: set the limits, read one JSON line of parameters and the model from stdin,
    measure, answer one JSON line ``{"status": 200, "result": ...}`` or ``{"status": 4xx/5xx,
    "error": ...}`` on stdout."""
    limits.apply(list(limit_args or []))
    reply_to = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the answer
    try:
        params = json.loads(sys.stdin.buffer.readline())
        reply = {"status": 200, "result": _measure(sys.stdin.buffer.read(), params)}
    except Exception as exc:
        reply = _failure(exc)
    reply_to.write(json.dumps(reply) + "\n")
    reply_to.flush()
    return 0


def _failure(exc: Exception) -> dict[str, Any]:
    """The reply for a measurement that raised: 507 out of memory, 400 the model's fault, 500 ours."""
    if limits.is_memory_failure(exc):
        return limits.memory_refusal(exc)
    if isinstance(exc, SlimdeployError):
        return {"status": 400, "error": str(exc)}
    if type(exc).__module__.startswith("onnxruntime"):
        first = (str(exc).strip().splitlines() or [""])[0][:500]
        return {"status": 400, "error": f"the model loaded but failed to run in onnxruntime: {first}"}
    return {"status": 500, "error": f"measuring failed: {type(exc).__name__}: {str(exc)[:500]}"}


def _measure(body: bytes, params: dict[str, Any]) -> dict[str, Any]:
    from slimdeploy.latency.measure import measure
    from slimdeploy.runtimes import get_runtime

    timer = get_runtime(MEASURING_RUNTIME, params["runtime"]).timer(body, params["input_shape"])
    return measure(timer, **params["protocol"]).to_dict()
