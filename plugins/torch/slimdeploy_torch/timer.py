"""PyTorch models ready to time: fixed device, precision, threads and input; CUDA timed with events."""
from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn

from slimdeploy.errors import SlimdeployError
from slimdeploy.latency.host import available_cores, host_info
from slimdeploy.runtimes.helpers import WarmUp, with_input_shape

from . import SIDECAR

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def device_info(device: str, mode: str, precision: str, threads: int,
                input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """What a figure was measured on: host, torch version, device (and GPU), mode, precision, threads, shape."""
    info = host_info()
    info.update({"runtime": "torch", "runtime_version": torch.__version__, "device": device,
                 "provider": device.split(":")[0], "mode": mode, "precision": precision, "threads": int(threads)})
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda_version"] = torch.version.cuda
    return with_input_shape(info, input_shape)


def load_artifact(artifact: Any) -> tuple[nn.Module, list[int] | None, str]:
    """(model, the input shape its artifact records or None, a name for messages).

    `artifact` is a slimdeploy model directory or an ``nn.Module`` (copied, so that moving it to
    a device or precision leaves the caller's model alone).
    """
    from slimdeploy import checkpoint, zoo

    if isinstance(artifact, nn.Module):
        recorded = (getattr(artifact, zoo.META, None) or {}).get("input_shape")
        return copy.deepcopy(artifact), recorded, f"<{type(artifact).__name__}>"
    if not isinstance(artifact, (str, os.PathLike)):
        raise SlimdeployError(
            f"the torch runtime times a slimdeploy model directory or an nn.Module, got {type(artifact).__name__}")
    path = Path(artifact)
    if not path.is_dir():
        raise SlimdeployError(f"{path} is not a slimdeploy model directory (the torch runtime's artifact)")
    model = checkpoint.load(path)
    return model, _recorded_shape(path), str(path)


def _recorded_shape(path: Path) -> list[int] | None:
    """The input shape the recipe records, else the one `TorchRuntime.export` wrote beside it."""
    from slimdeploy.checkpoint import MANIFEST

    for name in (MANIFEST, SIDECAR):
        try:
            shape = json.loads((path / name).read_text()).get("input_shape")
        except (OSError, ValueError):
            continue
        if shape:
            return list(shape)
    return None


def resolve_shape(wanted: Sequence[int] | None, recorded: Sequence[int] | None, name: str) -> tuple[int, ...]:
    """`wanted` if given (positive integers), else the recorded shape, else a clear error."""
    shape = wanted if wanted is not None else recorded
    if shape is None:
        raise SlimdeployError(f"{name} records no input shape; pass input_shape, e.g. (1, 3, 224, 224)")
    try:
        result = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise SlimdeployError(f"input_shape must be a sequence of integers, got {shape!r}") from None
    if not result or any(d < 1 for d in result):
        raise SlimdeployError(f"input_shape must be positive integers, got {shape!r}")
    return result


class TorchTimer(WarmUp):
    """An ``nn.Module`` in eval mode on a fixed device, precision and input, ready to time.

    Runs happen under ``torch.inference_mode()`` with ``torch.set_num_threads(threads)`` (the
    previous count is restored afterwards). On the CPU each run is wall time; on CUDA each run
    lies between a pair of CUDA events on the current stream, read after one synchronize per
    batch of runs. ``mode="compile"`` wraps the model in ``torch.compile`` and runs it once here
    to compile; failure raises `SlimdeployError` suggesting mode=eager.
    """

    def __init__(self, artifact: Any, input_shape: Sequence[int] | None = None, *, device: str = "cpu",
                 mode: str = "eager", precision: str = "fp32", threads: int | None = None, seed: int = 0) -> None:
        model, recorded, self.name = load_artifact(artifact)
        self.input_shape: tuple[int, ...] = resolve_shape(input_shape, recorded, self.name)
        self.batch: int = self.input_shape[0]
        self.threads: int = int(threads) if threads is not None else available_cores()
        self.device_name, self.mode, self.precision = device, mode, precision
        self.torch_device = torch.device(device)
        self.cuda = self.torch_device.type == "cuda"
        dtype = _DTYPES[precision]
        self.model = model.eval().to(device=self.torch_device, dtype=dtype)
        generator = torch.Generator().manual_seed(int(seed))
        self.input = torch.randn(self.input_shape, generator=generator).to(self.torch_device, dtype)
        if mode == "compile":
            self.model = torch.compile(self.model)
        self._first_run()

    @contextlib.contextmanager
    def _running(self, pause_gc: bool = True) -> Iterator[None]:
        """Threads set, inference mode on, garbage collection paused; all restored afterwards."""
        previous = torch.get_num_threads()
        was_enabled = gc.isenabled()
        torch.set_num_threads(self.threads)
        if pause_gc:
            gc.disable()
        try:
            with torch.inference_mode():
                yield
        finally:
            if was_enabled:
                gc.enable()
            torch.set_num_threads(previous)

    def _first_run(self) -> None:
        """Run once (compiling in compile mode) so that a model that cannot run fails here, clearly."""
        try:
            with self._running(pause_gc=False):  # compilation allocates freely
                self.model(self.input)
                if self.cuda:
                    torch.cuda.synchronize(self.torch_device)
        except SlimdeployError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if self.mode == "compile":
                raise SlimdeployError(
                    f"torch.compile failed for {self.name} ({type(exc).__name__}: {first}); "
                    f"measure it with mode=eager instead") from exc
            raise SlimdeployError(
                f"{self.name} does not run on an input of shape {list(self.input_shape)} "
                f"({type(exc).__name__}: {first}); pass the input_shape it takes") from exc

    def time_runs(self, n: int) -> list[float]:
        """`n` back-to-back runs, in milliseconds."""
        with self._running():
            return self._cuda_runs(n) if self.cuda else self._cpu_runs(n)

    def _cpu_runs(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter_ns()
            self.model(self.input)
            times.append((time.perf_counter_ns() - start) / 1e6)
        return times

    def _cuda_runs(self, n: int) -> list[float]:
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        with torch.cuda.device(self.torch_device):
            for start, end in pairs:
                start.record()
                self.model(self.input)
                end.record()
            torch.cuda.synchronize(self.torch_device)
        return [float(start.elapsed_time(end)) for start, end in pairs]

    def device(self) -> dict[str, Any]:
        return device_info(self.device_name, self.mode, self.precision, self.threads, self.input_shape)
