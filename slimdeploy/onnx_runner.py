"""Run an ONNX file in ONNX Runtime (CPU) without torch.

This module must never import torch, directly or indirectly: it is what proves that an exported
model runs on a machine that has only onnxruntime and numpy. It is also a command:

    python -m slimdeploy.onnx_runner MODEL.onnx INPUTS.npz OUTPUTS.npz

reads arrays ``x0, x1, ...`` from INPUTS.npz, runs each through the model (fed to its first input)
and writes the first output of run i as ``yi`` to OUTPUTS.npz, and its further outputs (models with
several outputs: segmentation, detection heads) as ``yi_1, yi_2, ...``. Exit codes: 0 success,
2 bad model or inputs (one line on stderr), 3 torch was imported after all.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import SlimdeployError

PROVIDER = "CPUExecutionProvider"
EXIT_BAD_INPUT = 2
EXIT_TORCH_IMPORTED = 3

# ONNX tensor element types -> numpy dtypes, used to cast inputs to what the model expects.
_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def runtime_name() -> str:
    """The runtime this module uses, e.g. ``"onnxruntime 1.31.1 CPUExecutionProvider"``."""
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__} {PROVIDER}"


def load_session(path: str | os.PathLike, threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` on the CPU provider; `SlimdeployError` if unloadable."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise SlimdeployError(f"ONNX file {path} does not exist")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only; ORT warns about unused initializers otherwise
    if threads is not None:
        if threads < 1:
            raise SlimdeployError(f"threads must be at least 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=[PROVIDER])
    except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, ...)
        raise SlimdeployError(f"cannot load ONNX model {path}: {_last_line(exc)}") from exc


def run_onnx(
    path: str | os.PathLike, inputs: Sequence[np.ndarray], threads: int | None = None
) -> list[np.ndarray]:
    """Run each array through the model at `path` and return the first output of each run.

    Each array feeds the model's first input and is cast to that input's element type.
    `threads` sets ONNX Runtime's intra-op thread count (None: its default).
    Raises `SlimdeployError` when the file cannot be loaded or a run fails.
    """
    return [outputs[0] for outputs in run_onnx_outputs(path, inputs, threads)]


def run_onnx_outputs(
    path: str | os.PathLike, inputs: Sequence[np.ndarray], threads: int | None = None
) -> list[list[np.ndarray]]:
    """Like `run_onnx`, but every output of each run, in the graph's output order."""
    session = load_session(path, threads)
    first = session.get_inputs()[0]
    dtype = _ONNX_DTYPES.get(first.type)
    outputs = []
    for i, array in enumerate(inputs):
        array = np.asarray(array)
        if dtype is not None and array.dtype != dtype:
            array = array.astype(dtype)
        try:
            result = session.run(None, {first.name: array})
        except Exception as exc:
            raise SlimdeployError(
                f"onnxruntime failed on input {i} (shape {tuple(array.shape)}) for {path}: {_last_line(exc)}"
            ) from exc
        outputs.append([np.asarray(r) for r in result])
    return outputs


def _read_inputs(path: Path) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = {name: data[name] for name in data.files}
    except Exception as exc:
        raise SlimdeployError(f"cannot read inputs {path}: {_last_line(exc)}") from exc
    arrays = []
    while f"x{len(arrays)}" in keys:
        arrays.append(keys[f"x{len(arrays)}"])
    if not arrays:
        raise SlimdeployError(f"inputs {path} hold no arrays named x0, x1, ...")
    return arrays


def _write_outputs(path: Path, outputs: list[list[np.ndarray]]) -> None:
    arrays = {}
    for i, run in enumerate(outputs):
        arrays.update({f"y{i}" if k == 0 else f"y{i}_{k}": y for k, y in enumerate(run)})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the name
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m slimdeploy.onnx_runner MODEL.onnx INPUTS.npz OUTPUTS.npz``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m slimdeploy.onnx_runner",
        description="Run arrays x0, x1, ... through an ONNX model in ONNX Runtime (CPU), without torch.",
    )
    parser.add_argument("model", type=Path, help="the .onnx file")
    parser.add_argument("inputs", type=Path, help=".npz with arrays x0, x1, ...")
    parser.add_argument("outputs", type=Path, help=".npz to write with arrays y0, y1, ...")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    args = parser.parse_args(argv)
    try:
        outputs = run_onnx_outputs(args.model, _read_inputs(args.inputs), threads=args.threads)
        _write_outputs(args.outputs, outputs)
    except SlimdeployError as exc:
        print(f"slimdeploy.onnx_runner: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if "torch" in sys.modules:
        print("slimdeploy.onnx_runner: error: torch was imported while running the ONNX model; "
              "the runner must work without torch", file=sys.stderr)
        return EXIT_TORCH_IMPORTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
