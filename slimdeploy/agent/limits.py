"""Resource limits of the agent's measuring child: address space and CPU time (no torch).

The agent passes the limits on the child's command line; the child sets them on itself
(`apply`) before it reads the model, so they bound everything it does afterwards. An
allocation beyond the address-space cap fails inside the child (ONNX Runtime reports "Failed to
allocate memory", numpy raises MemoryError) and the agent answers 507 naming the cap; past its
CPU-time cap the kernel stops the child with SIGXCPU and the agent answers 504.
"""
from __future__ import annotations

import math
import os
import signal
from typing import Any

MEMORY_SHARE = 0.5          # default --max-memory: this share of the device's RAM ...
MIN_DEFAULT_MEMORY = 1 << 30  # ... but never below 1 GiB
CPU_GRACE_SECONDS = 2       # after the soft CPU limit (SIGXCPU), the hard one kills outright
MEMORY_FAILURES = ("failed to allocate memory", "bad_alloc", "bad allocation", "out of memory",
                   "unable to allocate", "cannot allocate memory")
MEMORY_STATUS = 507  # Insufficient Storage: the request is fine, this device may not spend that much


def total_memory() -> int | None:
    """The device's physical RAM in bytes, where the OS tells it."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def default_max_memory() -> int | None:
    """`MEMORY_SHARE` of the RAM (at least `MIN_DEFAULT_MEMORY`), or None where RAM is unknown."""
    ram = total_memory()
    return None if not ram else max(MIN_DEFAULT_MEMORY, int(ram * MEMORY_SHARE))


def address_space_hard_limit() -> int | None:
    """This process's hard RLIMIT_AS (None: unlimited, or no `resource` module here)."""
    try:
        import resource
    except ImportError:
        return None
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def can_limit() -> bool:
    """Whether this platform lets a process cap its own address space and CPU time."""
    try:
        import resource
    except ImportError:
        return False
    return hasattr(resource, "RLIMIT_AS") and hasattr(resource, "RLIMIT_CPU")


def size_text(size: int | float) -> str:
    """1610612736 -> '1.5 GiB'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} bytes"


def child_args(max_memory: int | None, max_cpu_seconds: float | None) -> list[str]:
    """The child's command-line arguments that carry the limits ('-' for none)."""
    cpu = None if max_cpu_seconds is None else max(1, math.ceil(max_cpu_seconds))
    return ["-" if max_memory is None else str(int(max_memory)), "-" if cpu is None else str(cpu)]


def apply(args: list[str]) -> None:
    """In the child: set the limits `child_args` wrote (before the model is read), never above the
    hard limits this process inherited."""
    if not can_limit():
        return
    import resource

    def lower(kind: int, soft: int, hard: int) -> None:
        inherited = resource.getrlimit(kind)[1]
        if inherited != resource.RLIM_INFINITY:
            soft, hard = min(soft, inherited), min(hard, inherited)
        resource.setrlimit(kind, (soft, hard))

    memory, cpu = (args + ["-", "-"])[:2]
    if memory != "-":
        lower(resource.RLIMIT_AS, int(memory), int(memory))
    if cpu != "-":
        lower(resource.RLIMIT_CPU, int(cpu), int(cpu) + CPU_GRACE_SECONDS)


def enforced_memory() -> int | None:
    """In the child: the address-space cap in force (what a refusal names)."""
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def is_memory_failure(exc: BaseException) -> bool:
    """Whether `exc` says an allocation failed (MemoryError, or ONNX Runtime's allocator message)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in MEMORY_FAILURES)


def memory_refusal(exc: BaseException) -> dict[str, Any]:
    """In the child: the reply for an allocation that failed, naming the cap in force."""
    cap = enforced_memory()
    limit = f"this agent's --max-memory of {size_text(cap)}" if cap else "the memory this device has"
    detail = next((line.strip() for line in str(exc).splitlines() if "alloc" in line.lower()),
                  str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return {"status": MEMORY_STATUS,
            "error": f"the model needs more memory than {limit} allows one measurement ({detail[-300:]}); "
                     f"measure a smaller model or input, or start the agent with a larger --max-memory"}


def signal_refusal(returncode: int, max_cpu_seconds: float | None) -> tuple[int, str] | None:
    """(status, message) when the child was stopped by a limit, judged from its exit status."""
    if returncode == -getattr(signal, "SIGXCPU", 1000) and max_cpu_seconds is not None:
        return 504, (f"the measurement used more than this agent's CPU-time limit of {max_cpu_seconds:g} s "
                     f"(--max-cpu-seconds) and was stopped; ask for a smaller max_seconds or fewer threads, or "
                     f"start the agent with a larger --max-cpu-seconds")
    if returncode == -getattr(signal, "SIGKILL", 1000):
        return MEMORY_STATUS, ("the measuring process was killed (SIGKILL), most likely because the device ran out "
                               "of memory or it ran past --max-cpu-seconds; measure a smaller model, or lower "
                               "the agent's --max-memory so such models are refused cleanly")
    return None
