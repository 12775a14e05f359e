"""slimdeploy: make a trained PyTorch model fit a measured latency budget on its deployment runtime.

The public API is loaded lazily so that `import slimdeploy` never imports torch: the ONNX runner
and the remote agent run on machines that have only onnxruntime.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "Widths": "slimdeploy.space",
    "WidthSpace": "slimdeploy.space",
    "ChannelGroup": "slimdeploy.space",
    "SlimdeployError": "slimdeploy.errors",
    "inspect": "slimdeploy.inspection",
    "prune": "slimdeploy.prune",
    "save": "slimdeploy.checkpoint",
    "load": "slimdeploy.checkpoint",
    "load_model": "slimdeploy.checkpoint",
    "export_onnx": "slimdeploy.export",
    "verify_onnx": "slimdeploy.export",
    "export_tensorrt": "slimdeploy.export_tensorrt",
}


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'slimdeploy' has no attribute {name!r}")


__all__ = sorted(_API)
