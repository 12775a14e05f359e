"""The measurement protocol every runtime plugin is timed with, and the figures it yields.

This module must not import torch: it also runs inside the remote agent, which has only
its runtime and numpy. A *timer* comes from a runtime plugin (`slimdeploy.runtimes`); a model
path or bytes given instead is timed with the ``onnxruntime`` plugin.

Shared machines drift (here the same model has measured 1.5-3x slower for minutes at a time),
so every figure is taken the same way:

* the ORT session gets a fixed, recorded thread count (`intra_op_num_threads`, one inter-op
  thread, sequential execution) and a fixed random input;
* warm-up first, then *rounds* of runs; a round whose own spread is too large is thrown away
  and measured again;
* the estimate is the median of the most recent rounds, and measuring stops once that median
  has stopped moving and its spread is under a target (or a cap on runs/time is hit, in which
  case the result says ``stable=False``);
* two or more models are compared *interleaved* (`compare`): rounds alternate between models
  in rotating order, each round yields a ratio of medians, and the quoted ratio is the median
  of those per-round ratios, so a drift hits both sides of the ratio alike.

Spread is reported as ``cv = IQR / median`` (a robust coefficient of variation; for normally
distributed times it is about 1.35 x std/mean). Latency outliers are one-sided, which makes
std/mean unstable, hence the quartile-based form.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from slimdeploy.errors import SlimdeployError
from slimdeploy.latency.host import BackgroundLoad

# ----------------------------------------------------------------------------- results


@dataclass
class Measurement:
    """One model's latency on one machine, with its spread and the conditions it was taken in.

    ``cv`` is IQR / median (robust); ``runs`` counts the timed runs behind ``median_ms``;
    ``rounds`` the rounds they came in; ``rejected_rounds`` counts rounds re-measured because
    their own spread was too large (when too few quiet rounds remain, the figure falls back to
    all rounds). ``stable`` is False when the median never settled within the caps (quote such
    a figure with care, or measure again). ``background_cores`` is how many cores other
    processes kept busy, on average, while this was measured (Linux; None elsewhere): a figure
    taken next to a busy neighbour is slow however stable it looks.
    """

    median_ms: float
    iqr_ms: float
    cv: float
    runs: int
    rounds: int
    threads: int
    batch: int
    input_shape: tuple[int, ...]
    device: dict[str, Any]
    stable: bool
    mean_ms: float = float("nan")
    min_ms: float = float("nan")
    rejected_rounds: int = 0
    warmup_runs: int = 0
    seconds: float = 0.0
    background_cores: float | None = None
    round_medians_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["input_shape"] = list(self.input_shape)
        return out

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Measurement":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["input_shape"] = tuple(kwargs.get("input_shape", ()))
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "Measurement":
        return cls.from_dict(json.loads(text))

    def __str__(self) -> str:
        flag = "" if self.stable else ", UNSTABLE"
        return (f"{self.median_ms:.3f} ms (IQR {self.iqr_ms:.3f} ms, cv {self.cv:.1%}, "
                f"{self.runs} runs, {self.threads} threads{flag})")


@dataclass
class Comparison:
    """Interleaved measurement of several models; ratios are relative to the first model.

    ``ratios[i]`` is the median over rounds of (median latency of model i in the round /
    median latency of model 0 in the same round); ``ratios[0] == 1``. ``ratio_iqr[i]`` is the
    IQR of those per-round ratios. A ratio below 1 means model i is faster than model 0.
    """

    measurements: list[Measurement]
    ratios: list[float]
    ratio_iqr: list[float]
    rounds: int
    stable: bool
    rejected_rounds: int = 0
    seconds: float = 0.0
    background_cores: float | None = None
    round_ratios: list[list[float]] = field(default_factory=list)

    @property
    def speedups(self) -> list[float]:
        """How many times faster each model is than the first (1 / ratio)."""
        return [1.0 / r if r > 0 else float("inf") for r in self.ratios]

    def to_dict(self) -> dict[str, Any]:
        return {
            "measurements": [m.to_dict() for m in self.measurements],
            "ratios": list(self.ratios),
            "ratio_iqr": list(self.ratio_iqr),
            "rounds": self.rounds,
            "stable": self.stable,
            "rejected_rounds": self.rejected_rounds,
            "seconds": self.seconds,
            "background_cores": self.background_cores,
            "round_ratios": [list(r) for r in self.round_ratios],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Comparison":
        return cls(
            measurements=[Measurement.from_dict(m) for m in data["measurements"]],
            ratios=list(data["ratios"]),
            ratio_iqr=list(data["ratio_iqr"]),
            rounds=data["rounds"],
            stable=data["stable"],
            rejected_rounds=data.get("rejected_rounds", 0),
            seconds=data.get("seconds", 0.0),
            background_cores=data.get("background_cores"),
            round_ratios=[list(r) for r in data.get("round_ratios", [])],
        )

    @classmethod
    def from_json(cls, text: str) -> "Comparison":
        return cls.from_dict(json.loads(text))


# ----------------------------------------------------------------------------- environment


def _robust_stats(samples: Sequence[float]) -> tuple[float, float, float]:
    """(median, IQR, IQR/median) of `samples`."""
    a = np.asarray(samples, dtype=np.float64)
    q1, med, q3 = (float(q) for q in np.percentile(a, [25, 50, 75]))
    iqr = q3 - q1
    return med, iqr, (iqr / med if med > 0 else float("inf"))


def _check_timer(timer: Any) -> Any:
    if not hasattr(timer, "time_runs"):
        raise SlimdeployError(f"measure/compare take a runtime's timer, got {type(timer).__name__}; for ONNX "
                              "files use slimdeploy.latency.onnx_files.measure_onnx / compare_onnx")
    return timer


def _runs_per_round(warmup_times: Sequence[float], round_s: float, min_round_runs: int) -> int:
    tail = warmup_times[len(warmup_times) // 2:] or warmup_times
    estimate_ms = max(float(np.median(tail)), 1e-3)
    return int(min(max(min_round_runs, round(round_s * 1000.0 / estimate_ms)), 2000))


def _moved(history: Sequence[float], settle: int) -> float:
    """Largest relative change of the last value against the `settle` values before it."""
    last = history[-1]
    return max(abs(last - h) / last for h in history[-1 - settle:-1])


# ----------------------------------------------------------------------------- measure


def measure(
    timer: Any,
    *,
    warmup: int = 5,
    warmup_s: float = 0.3,
    round_s: float = 0.1,
    min_round_runs: int = 5,
    min_runs: int = 30,
    max_runs: int = 100_000,
    max_seconds: float = 10.0,
    window: int = 5,
    settle: int = 2,
    rtol: float = 0.01,
    target_cv: float = 0.1,
    max_round_cv: float = 0.3,
) -> Measurement:
    """Median latency of one model, repeated until it is stable.

    Warm-up runs until both `warmup` runs and `warmup_s` seconds are done; a round is then
    about `round_s` seconds of runs (at least `min_round_runs`). A round whose own cv exceeds
    `max_round_cv` is discarded and measured again. The estimate is taken over the samples of
    the last `window` accepted rounds (more if needed to hold `min_runs`), so that a slow
    spell that has passed drops out. It is
    stable once it holds at least `min_runs` runs, moved less than `rtol` (relative) over the
    last `settle` rounds, and its cv (IQR/median) is at most `target_cv`. Measuring stops at
    stability, after `max_runs` timed runs, or after `max_seconds`; then ``stable=False``.
    `timer` is a runtime's timer (`Runtime.timer`), used as it is (its threads, shape and input);
    `slimdeploy.latency.onnx_files.measure_onnx` measures an ONNX file on ONNX Runtime.
    """
    timer = _check_timer(timer)
    start = time.perf_counter()
    load = BackgroundLoad()
    warm = timer.warm_up(warmup, warmup_s)
    per_round = _runs_per_round(warm, round_s, min_round_runs)
    window = max(window, -(-min_runs // per_round))  # the window must be able to hold min_runs

    accepted: list[list[float]] = []
    rejected: list[list[float]] = []
    history: list[float] = []
    total = 0
    stable = False
    while True:
        samples = timer.time_runs(per_round)
        total += len(samples)
        if _robust_stats(samples)[2] > max_round_cv:
            rejected.append(samples)
        else:
            accepted.append(samples)
            recent = [t for r in accepted[-window:] for t in r]
            if len(recent) >= min_runs:
                med, _, cv = _robust_stats(recent)
                history.append(med)
                if len(history) > settle and _moved(history, settle) < rtol and cv <= target_cv:
                    stable = True
                    break
        if total >= max_runs or time.perf_counter() - start >= max_seconds:
            break

    rounds = accepted[-window:]
    if sum(len(r) for r in rounds) < min_runs:
        # Never enough quiet rounds: report everything measured, flagged as unstable.
        rounds = accepted + rejected
    samples = [t for r in rounds for t in r]
    med, iqr, cv = _robust_stats(samples)
    return Measurement(
        median_ms=med, iqr_ms=iqr, cv=cv, runs=len(samples), rounds=len(rounds),
        threads=timer.threads, batch=timer.batch, input_shape=timer.input_shape,
        device=timer.device(), stable=stable,
        mean_ms=float(np.mean(samples)), min_ms=float(np.min(samples)),
        rejected_rounds=len(rejected), warmup_runs=len(warm),
        seconds=time.perf_counter() - start, background_cores=load.cores(),
        round_medians_ms=[float(np.median(r)) for r in accepted],
    )


# ----------------------------------------------------------------------------- compare


def compare(
    timers: Sequence[Any],
    *,
    rounds: int = 10,
    max_rounds: int = 60,
    max_seconds: float = 30.0,
    warmup: int = 5,
    warmup_s: float = 0.2,
    round_s: float = 0.05,
    min_round_runs: int = 5,
    settle: int = 2,
    rtol: float = 0.01,
    target_cv: float = 0.1,
    max_round_cv: float = 0.3,
) -> Comparison:
    """Interleaved latency of 2+ models in one run; ratios are against ``models[0]``.

    Each round times every model for about `round_s` seconds (at least `min_round_runs`
    runs), in an order that rotates each round (A,B / B,A / ...), so that drift of the
    machine affects all models alike. Per round, each model's median is divided by the first
    model's; the quoted ratio is the median of these per-round ratios. A round in which some
    model's own cv exceeds `max_round_cv` is measured again. Rounds continue until at least
    `rounds` are accepted, every ratio moved less than `rtol` over the last `settle` rounds and
    the per-round ratios' spread (IQR/median) is at most `target_cv`; or until `max_rounds`
    accepted rounds or `max_seconds` (then ``stable=False``). The timers must share one input
    shape. Each model's `Measurement` pools all its accepted runs.
    """
    if len(timers) < 2:
        raise SlimdeployError(f"compare needs at least two models, got {len(timers)}")
    timers = [_check_timer(t) for t in timers]
    shapes = {t.input_shape for t in timers}
    if len(shapes) > 1:
        raise SlimdeployError(
            f"compared models must take the same input shape, got {sorted(shapes)}; pass input_shape")
    start = time.perf_counter()
    load = BackgroundLoad()
    warm = [t.warm_up(warmup, warmup_s) for t in timers]
    per_round = [_runs_per_round(w, round_s, min_round_runs) for w in warm]

    n = len(timers)
    accepted: list[list[list[float]]] = []  # round -> model -> samples
    accepted_ratios: list[list[float]] = []  # round -> model -> ratio of medians
    noisy: list[list[list[float]]] = []
    noisy_ratios: list[list[float]] = []
    history: list[list[float]] = []
    stable = False
    k = 0
    while True:
        order = [(k + j) % n for j in range(n)]
        k += 1
        samples: list[list[float]] = [[] for _ in range(n)]
        for i in order:
            samples[i] = timers[i].time_runs(per_round[i])
        stats = [_robust_stats(s) for s in samples]
        ratios_now = [med / stats[0][0] for med, _, _ in stats]
        if any(cv > max_round_cv for _, _, cv in stats):
            noisy.append(samples)
            noisy_ratios.append(ratios_now)
        else:
            accepted.append(samples)
            accepted_ratios.append(ratios_now)
            history.append([float(r) for r in np.median(np.asarray(accepted_ratios), axis=0)])
            if len(accepted) >= max(rounds, settle + 1):
                moved = max(_moved([h[i] for h in history], settle) for i in range(1, n))
                spread = max(_robust_stats([r[i] for r in accepted_ratios])[2] for i in range(1, n))
                if moved < rtol and spread <= target_cv:
                    stable = True
                    break
        if len(accepted) >= max_rounds or time.perf_counter() - start >= max_seconds:
            break

    rejected = len(noisy)
    if len(accepted) < rounds:
        # Too few quiet rounds: quote every round measured, flagged as unstable.
        accepted, accepted_ratios = accepted + noisy, accepted_ratios + noisy_ratios
    round_ratios = accepted_ratios

    seconds = time.perf_counter() - start
    background = load.cores()
    measurements = []
    for i, timer in enumerate(timers):
        pooled = [t for r in accepted for t in r[i]]
        med, iqr, cv = _robust_stats(pooled)
        measurements.append(Measurement(
            median_ms=med, iqr_ms=iqr, cv=cv, runs=len(pooled), rounds=len(accepted),
            threads=timer.threads, batch=timer.batch, input_shape=timer.input_shape,
            device=timer.device(), stable=stable and cv <= target_cv,
            mean_ms=float(np.mean(pooled)), min_ms=float(np.min(pooled)),
            rejected_rounds=rejected, warmup_runs=len(warm[i]), seconds=seconds,
            background_cores=background,
            round_medians_ms=[float(np.median(r[i])) for r in accepted],
        ))
    per_model = np.asarray(round_ratios)
    ratio_iqr = [float(np.subtract(*np.percentile(per_model[:, i], [75, 25]))) for i in range(n)]
    return Comparison(
        measurements=measurements,
        ratios=[float(r) for r in np.median(per_model, axis=0)],
        ratio_iqr=ratio_iqr,
        rounds=len(accepted),
        stable=stable,
        rejected_rounds=rejected,
        seconds=seconds,
        background_cores=background,
        round_ratios=[[float(x) for x in r] for r in round_ratios],
    )
