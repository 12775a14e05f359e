"""Runtime plugins: the interface (`Runtime`) and discovery through entry points (no runtime imported here)."""
from __future__ import annotations

from .base import Runtime, device_fingerprint
from .registry import GROUP, get_runtime, parse_runtime_spec, runtime_names

__all__ = ["GROUP", "Runtime", "device_fingerprint", "get_runtime", "parse_runtime_spec", "runtime_names"]
