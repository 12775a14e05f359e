"""Measure alone: benchmark processes that share a machine pause each other while one times a model.

Two benchmark processes pinned to two cores train side by side at full speed, but a latency figure
taken next to a busy neighbour is slow (a sub-millisecond model measured up to 40 % apart). With
`measure_alone(DIR)`, this process registers its pid in DIR; every latency measurement
(`slimdeploy.latency.measure.measure` and `compare`, which all runtimes time through) then takes DIR's
lock, stops every other registered process (SIGSTOP), measures, and continues them (SIGCONT). Only the
lock holder stops others, so two processes never stop each other; a process waiting for the lock may be
stopped while it waits, which is harmless. Linux only (fcntl, signals).
"""
from __future__ import annotations

import atexit
import fcntl
import functools
import importlib
import os
import signal
import sys
import time
from pathlib import Path


class _Alone:
    """The lock and the pid registry of one quiet directory; re-entrant within this process."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.depth = 0
        self.lock_file = None
        self.stopped: list[int] = []
        self.paused_s = 0.0  # time spent measuring alone (the others stopped), reported at exit
        self.measurements = 0

    def others(self) -> list[int]:
        pids = []
        for entry in self.directory.glob("*.pid"):
            pid = int(entry.stem)
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                entry.unlink(missing_ok=True)  # a process that died without unregistering
                continue
            pids.append(pid)
        return pids

    def __enter__(self):
        self.depth += 1
        if self.depth == 1:
            self.lock_file = open(self.directory / "lock", "w")
            fcntl.flock(self.lock_file, fcntl.LOCK_EX)
            self.started = time.perf_counter()
            for pid in self.others():
                try:
                    os.kill(pid, signal.SIGSTOP)
                    self.stopped.append(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)  # let a stopped neighbour's in-flight work leave the core
        return self

    def __exit__(self, *exc):
        self.depth -= 1
        if self.depth == 0:
            for pid in self.stopped:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            self.stopped = []
            self.paused_s += time.perf_counter() - self.started
            self.measurements += 1
            fcntl.flock(self.lock_file, fcntl.LOCK_UN)
            self.lock_file.close()
        return False


def measure_alone(directory: str | os.PathLike) -> _Alone:
    """Register this process in `directory` and make every latency measurement in it run alone."""
    measure_module = importlib.import_module("slimdeploy.latency.measure")  # the package re-exports the function

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    alone = _Alone(directory)
    mine = directory / f"{os.getpid()}.pid"
    mine.write_text(" ".join(sys.argv))
    atexit.register(mine.unlink, missing_ok=True)
    atexit.register(lambda: alone.measurements and print(
        f"[quiet] measured alone {alone.measurements} time(s), the others stopped for {alone.paused_s:.0f} s in all",
        file=sys.stderr))

    for name in ("measure", "compare"):
        original = getattr(measure_module, name)

        @functools.wraps(original)
        def alone_call(*args, __original=original, **kwargs):
            with alone:
                return __original(*args, **kwargs)

        # Rebind every module attribute that holds the original (names imported before this ran);
        # later `from slimdeploy.latency.measure import ...` reads the patched module attribute.
        for module in list(sys.modules.values()):
            if module is not None and module.__name__.startswith("slimdeploy"):
                for attr, value in list(vars(module).items()):
                    if value is original:
                        setattr(module, attr, alone_call)
    return alone
