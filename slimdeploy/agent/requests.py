"""Checking what a request to the agent asks for: query parameters and the model's bytes (no torch)."""
from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qs

from slimdeploy.errors import SlimdeployError

MAX_INPUT_ELEMENTS = 1 << 28
MEASURING_RUNTIME = "onnxruntime"  # the runtime plugin the agent measures with (found by entry point)

# Query parameters of POST /v1/measure: name -> (type, lowest, highest); None = the request timeout.
RUNTIME_PARAMS = ("threads", "optimization", "provider", "seed", "input_shape")
_INT_PARAMS = {"threads": (1, 4096), "seed": (0, 2**63 - 1), "warmup": (0, 100_000),
               "min_round_runs": (1, 1_000_000), "min_runs": (1, 10_000_000),
               "max_runs": (1, 10_000_000), "window": (1, 100_000), "settle": (1, 1000)}
_FLOAT_PARAMS = {"max_seconds": (0.0, None), "warmup_s": (0.0, None), "round_s": (0.0, 60.0),
                 "rtol": (0.0, 100.0), "target_cv": (0.0, 100.0), "max_round_cv": (0.0, 100.0)}
MEASURE_PARAMS = tuple(sorted({"optimization", "provider", "input_shape", *_INT_PARAMS, *_FLOAT_PARAMS}))
DEVICE_PARAMS = ("optimization", "provider", "threads")


class BadRequest(Exception):
    """A request the agent refuses with 400 and this message."""


def parse_query(query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """Query parameters as single strings; unknown or repeated ones are refused."""
    try:
        raw = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=100)
    except ValueError as exc:
        raise BadRequest(f"cannot parse the query string: {exc}") from None
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown query parameter {', '.join(map(repr, unknown))}; known: {', '.join(allowed)}")
    repeated = sorted(k for k, v in raw.items() if len(v) > 1)
    if repeated:
        raise BadRequest(f"query parameter {', '.join(map(repr, repeated))} given more than once")
    return {k: v[0] for k, v in raw.items()}


def _number(name: str, text: str, kind: type, low: float, high: float) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise BadRequest(f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise BadRequest(f"{name} must be finite, got {text!r}")
    lowest_ok = value >= low if kind is int else value > low
    if not lowest_ok or value > high:
        bound = f">= {low}" if kind is int else f"> {low}"
        raise BadRequest(f"{name} must be {bound} and <= {high:g}, got {text!r}")
    return value


def _input_shape(text: str) -> list[int]:
    try:
        dims = [int(d) for d in text.split(",")]
    except ValueError:
        raise BadRequest(f"input_shape must be comma-separated integers such as 1,3,224,224, got {text!r}") from None
    if not 1 <= len(dims) <= 8 or any(d < 1 for d in dims):
        raise BadRequest(f"input_shape must have 1 to 8 positive dimensions, got {text!r}")
    if math.prod(dims) > MAX_INPUT_ELEMENTS:
        raise BadRequest(f"input_shape {text!r} has more than {MAX_INPUT_ELEMENTS} elements")
    return dims


def runtime_value(name: str, text: str) -> Any:
    """A runtime setting from its query text (optimization, provider, input_shape or an integer)."""
    if name == "optimization":
        from slimdeploy.runtimes import get_runtime

        try:  # the measuring runtime's own check, through its plugin interface
            return get_runtime(MEASURING_RUNTIME, {"optimization": text}).options["optimization"]
        except SlimdeployError as exc:
            raise BadRequest(str(exc)) from None
    if name == "provider":
        import onnxruntime as ort

        available = ort.get_available_providers()
        if text not in available:
            raise BadRequest(f"provider {text!r} is not available on this agent; available: {', '.join(available)}")
        return text
    if name == "input_shape":
        return _input_shape(text)
    low, high = _INT_PARAMS[name]
    return _number(name, text, int, low, high)


def measure_params(query: str, config: Any) -> dict[str, Any]:
    """`config` has ``threads`` and ``request_timeout`` (an `AgentConfig`). ``{"runtime": options, "input_shape": dims or None, "protocol": kwargs}`` of a measure request."""
    raw = parse_query(query, MEASURE_PARAMS)
    runtime: dict[str, Any] = {} if config.threads is None else {"threads": config.threads}
    protocol: dict[str, Any] = {}
    input_shape = None
    for name, text in raw.items():
        if name == "input_shape":
            input_shape = _input_shape(text)
        elif name in RUNTIME_PARAMS:
            runtime[name] = runtime_value(name, text)
        elif name in _INT_PARAMS:
            protocol[name] = _number(name, text, int, *_INT_PARAMS[name])
        else:
            low, high = _FLOAT_PARAMS[name]
            protocol[name] = _number(name, text, float, low, config.request_timeout if high is None else high)
    protocol.setdefault("max_seconds", min(10.0, config.request_timeout / 2))
    return {"runtime": runtime, "input_shape": input_shape, "protocol": protocol}


def check_onnx(body: bytes) -> str | None:
    """Why `body` is not an ONNX model the agent will measure, or None (full load: in the worker)."""
    if not body:
        return "the body is empty; send the ONNX model's bytes"
    try:
        import onnx
    except ImportError:  # the worker's onnxruntime load still checks the bytes
        return None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(body)
    except Exception as exc:  # protobuf's DecodeError and friends
        return f"the body is not an ONNX model (it does not parse as an ONNX ModelProto: {exc})"
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node:
        return "the body is not an ONNX model (no ir_version or an empty graph)"
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
        return "the model refers to external data files; send one with its weights embedded"
    return None
