"""Facts about the measuring machine: CPU, cores, and how busy other processes keep it (no torch)."""
from __future__ import annotations

import functools
import os
import platform
import time
from typing import Any


def available_cores() -> int:
    """Logical cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def host_info() -> dict[str, Any]:
    """The machine a figure is measured on: CPU model, cores, OS, Python."""
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count() or 1,
        "available_cores": available_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _machine_busy_seconds() -> float | None:
    """CPU-seconds all processes have used since boot (Linux /proc/stat; steal counts as busy)."""
    try:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:9]]
        return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class BackgroundLoad:
    """Cores kept busy by *other* processes between construction and `cores()`."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._busy = _machine_busy_seconds()
        own = os.times()
        self._own = own.user + own.system

    def cores(self) -> float | None:
        busy = _machine_busy_seconds()
        wall = time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return None
        own = os.times()
        others = (busy - self._busy) - (own.user + own.system - self._own)
        return round(max(0.0, others / wall), 2)
