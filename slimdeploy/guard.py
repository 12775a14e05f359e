"""Bound the memory and time of a step that can explode (torch-pruning's dependency analysis).

MaxViT drove the analysis past 24 GB here and the kernel killed the process; Swin grew to 7 GB
in 100 s. Inside `bounded()`, an allocation beyond the budget raises MemoryError (the address
space is capped with RLIMIT_AS) and overrunning the time raises `LimitExceeded`, so the caller
can fall back instead of taking the machine down.
"""
from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading

DEFAULT_MEMORY_GB = float(os.environ.get("SLIMDEPLOY_ANALYSIS_MEMORY_GB", "4"))
DEFAULT_SECONDS = float(os.environ.get("SLIMDEPLOY_ANALYSIS_SECONDS", "60"))


class LimitExceeded(RuntimeError):
    """The bounded step used more memory or time than it was given."""


def _virtual_size_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("VmSize not found in /proc/self/status")


@contextlib.contextmanager
def bounded(memory_gb: float = DEFAULT_MEMORY_GB, seconds: float = DEFAULT_SECONDS, what: str = "step"):
    """Run the body with at most `memory_gb` more address space and `seconds` of wall time.

    Memory bounding needs Linux's /proc; the time bound works only in the main thread.
    Both are restored on exit. Failures surface as `LimitExceeded` naming `what`.
    """
    old_limit = resource.getrlimit(resource.RLIMIT_AS)
    limited = False
    try:
        cap = _virtual_size_bytes() + int(memory_gb * 2**30)
        if old_limit[1] == resource.RLIM_INFINITY or cap < old_limit[1]:
            resource.setrlimit(resource.RLIMIT_AS, (cap, old_limit[1]))
            limited = True
    except (OSError, ValueError):
        pass

    timed = threading.current_thread() is threading.main_thread() and seconds > 0
    old_handler = None
    if timed:
        def _on_alarm(signum, frame):
            raise LimitExceeded(f"{what} took longer than {seconds:g} s")

        old_handler = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except MemoryError as exc:
        raise LimitExceeded(f"{what} needed more than {memory_gb:g} GB of memory") from exc
    except RuntimeError as exc:
        if "allocate" in str(exc) and not isinstance(exc, LimitExceeded):
            raise LimitExceeded(f"{what} needed more than {memory_gb:g} GB of memory") from exc
        raise
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
        if limited:
            resource.setrlimit(resource.RLIMIT_AS, old_limit)
