"""benchmarks/quiet.py: a registered neighbour is stopped while this process measures, and only then."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

MEASURER = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from quiet import measure_alone
    measure_alone(sys.argv[2])
    from slimdeploy.latency.measure import measure

    def state():  # the neighbour's scheduler state: R/S running or sleeping, T stopped
        return open(f"/proc/{sys.argv[3]}/stat").read().rsplit(")", 1)[1].split()[0]

    class Timer:  # the timer protocol measure() times through, on a sleep instead of a model
        threads, batch, input_shape, seen = 1, 1, (1,), []
        def device(self):
            return "cpu"
        def warm_up(self, runs, seconds):
            return self.time_runs(runs)
        def time_runs(self, n):
            self.seen.append(state())
            out = []
            for _ in range(n):
                start = time.perf_counter(); time.sleep(0.001); out.append((time.perf_counter() - start) * 1e3)
            return out

    timer = Timer()
    measure(timer, min_runs=10, max_seconds=1.0)
    time.sleep(0.2)
    print(json.dumps({"during": sorted(set(timer.seen)), "after": state()}))
""")


def test_a_registered_neighbour_is_stopped_during_a_measurement_and_continued_after(tmp_path):
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        (tmp_path / f"{neighbour.pid}.pid").write_text("busy loop")
        done = subprocess.run([sys.executable, "-c", MEASURER, str(BENCHMARKS), str(tmp_path), str(neighbour.pid)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert done.returncode == 0, done.stderr[-2000:]
        states = json.loads(done.stdout)
        assert states["during"] == ["T"]  # stopped for every round of the measurement
        assert states["after"] in ("R", "S")  # and continued once it was done
        assert "[quiet] measured alone 1 time(s)" in done.stderr
        assert [p.name for p in tmp_path.glob("*.pid")] == [f"{neighbour.pid}.pid"]  # the measurer unregistered
    finally:
        neighbour.kill()
        neighbour.wait()
