"""The agent's measuring child process: one model in on stdin, one JSON line out (no torch, no pickle)."""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from slimdeploy.errors import SlimdeployError

WORKER_CODE = "from slimdeploy.agent.worker import worker_main; raise SystemExit(worker_main())"


def worker_main() -> int:
    """Child process: read one JSON line of parameters and the model from stdin, measure, answer one
    JSON line ``{"status": 200, "result": ...}`` or ``{"status": 4xx/5xx, "error": ...}`` on stdout."""
    reply_to = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the answer
    try:
        params = json.loads(sys.stdin.buffer.readline())
        reply = {"status": 200, "result": _measure(sys.stdin.buffer.read(), params)}
    except SlimdeployError as exc:
        reply = {"status": 400, "error": str(exc)}
    except Exception as exc:
        if type(exc).__module__.startswith("onnxruntime"):
            first = (str(exc).strip().splitlines() or [""])[0][:500]
            reply = {"status": 400, "error": f"the model loaded but failed to run in onnxruntime: {first}"}
        else:
            reply = {"status": 500, "error": f"measuring failed: {type(exc).__name__}: {str(exc)[:500]}"}
    reply_to.write(json.dumps(reply) + "\n")
    reply_to.flush()
    return 0


def _measure(body: bytes, params: dict[str, Any]) -> dict[str, Any]:
    from slimdeploy.latency.measure import measure
    from slimdeploy.runtimes import get_runtime

    timer = get_runtime("onnxruntime", params["runtime"]).timer(body, params["input_shape"])
    return measure(timer, **params["protocol"]).to_dict()
