"""Export a PyTorch model to ONNX and check that ONNX Runtime computes what PyTorch computes.

Every tensor the model returns (tensors nested in tuples, lists and dicts: segmentation's
{"out", "aux"}) becomes one graph output, named after its place (`output`, `output.out`, ...).
"""
from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from . import adapters
from .errors import SlimdeployError
from .modes import set_eval
from .onnx_runner import EXIT_TORCH_IMPORTED, _last_line, run_onnx_outputs, runtime_name
from .outputs import named_tensors
from .parity import ATOL, REL_FLOOR, RTOL, STOL, ParityError, ParityReport, compare

__all__ = ["ParityError", "ParityReport", "REL_FLOOR", "default_inputs", "export_onnx", "output_names",
           "verify_onnx"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SEED = 0
_TWO_GB = 2**31


def _error_line(exc: BaseException) -> str:
    """The last line of the innermost cause (the dynamo exporter wraps the real error in boilerplate)."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return re.sub(r"\x1b\[[0-9;]*m", "", _last_line(exc))


@contextlib.contextmanager
def _eval_model(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode without changing the caller's: a copy, else the original restored."""
    try:
        clone = copy.deepcopy(model)
    except Exception:  # some modules hold state deepcopy refuses; fall back to restoring modes
        clone = None
    if clone is not None:
        yield set_eval(clone)
        return
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield set_eval(model)
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*feature will be removed", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*'dynamic_axes' is not recommended", category=UserWarning)
        yield


class _Flat(nn.Module):
    """The model with its output flattened to a tuple of tensors (one graph output each)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return tuple(t for _, t in named_tensors(self.model(x)))


def output_names(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """The graph output names `export_onnx` gives the model's tensors (model in eval mode, no grad)."""
    with torch.no_grad():
        names = [name for name, _ in named_tensors(model(example_input))]
    if not names:
        raise SlimdeployError(f"{type(model).__name__} returned no tensor to export")
    return names


def _export_once(model: nn.Module, example_input: torch.Tensor, f: Path, opset: int,
                 dynamic_batch: bool, dynamo: bool, names: list[str]) -> None:
    if names != ["output"]:
        model = _Flat(model)
    kwargs: dict = dict(input_names=["input"], output_names=names, opset_version=opset, dynamo=dynamo)
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, **{name: {0: "batch"} for name in names}}
    if dynamo:
        # The dynamo exporter implements opset 18 and up; asking for less only adds a down-conversion
        # that usually fails (with a logged traceback) and leaves the model at 18 anyway.
        kwargs["opset_version"] = max(opset, 18)
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        size += sum(b.numel() * b.element_size() for b in model.buffers())
        kwargs["external_data"] = size >= _TWO_GB * 0.9
        kwargs["verbose"] = False
    with _quiet_exporter():
        torch.onnx.export(model, (example_input,), str(f), **kwargs)


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike,
    opset: int = 17,
    dynamic_batch: bool = False,
) -> Path:
    """Export `model` (in eval mode, on a copy) to ONNX at `path` and return the path.

    Uses the TorchScript exporter (``dynamo=False``), falling back to the torch.export-based one
    (which emits opset ``max(opset, 18)``) when it fails. The graph has one input ``input`` and
    one output per tensor the model returns (``output`` for a plain tensor, see `output_names`;
    for a detection model, the tensors its heads return before post-processing: see
    `slimdeploy.adapters.detection`);
    with `dynamic_batch` their first axis is the symbolic ``batch``. The file is passed through
    ``onnx.checker`` and appears atomically (written in a temporary folder next to it, then
    renamed; external-data files of models over 2 GB move with it). Raises `SlimdeployError`
    when both exporters fail or the result is not valid ONNX.
    """
    import onnx

    path = Path(path)
    if not isinstance(example_input, torch.Tensor):
        raise SlimdeployError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        tmp = tmpdir / path.name
        with _eval_model(model) as whole, torch.no_grad():
            clone, _ = adapters.export_view(whole)
            try:
                names = output_names(clone, example_input)
            except SlimdeployError:
                raise
            except Exception as exc:
                raise SlimdeployError(f"cannot export {type(model).__name__} to ONNX: its forward fails on the "
                                      f"example input: {_error_line(exc)}") from exc
            try:
                _export_once(clone, example_input, tmp, opset, dynamic_batch, dynamo=False, names=names)
            except Exception as legacy_error:
                for leftover in tmpdir.iterdir():
                    leftover.unlink()
                try:
                    _export_once(clone, example_input, tmp, opset, dynamic_batch, dynamo=True, names=names)
                except Exception as dynamo_error:
                    raise SlimdeployError(
                        f"cannot export {type(model).__name__} to ONNX: TorchScript exporter: "
                        f"{_error_line(legacy_error)}; dynamo exporter: {_error_line(dynamo_error)}"
                    ) from dynamo_error
        try:
            onnx.checker.check_model(str(tmp))
        except Exception as exc:
            raise SlimdeployError(
                f"the ONNX export of {type(model).__name__} is invalid: {_last_line(exc)}"
            ) from exc
        # External-data files first, so the model file never appears without its weights.
        for produced in sorted(tmpdir.iterdir(), key=lambda p: p.name == path.name):
            os.replace(produced, path.parent / produced.name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def _sample_photos(height: int, width: int) -> list[np.ndarray]:
    """scikit-learn's two sample photos (china, flower), center-cropped to the aspect of
    height x width, resized, scaled to [0, 1] and ImageNet-normalized: float32 (3, H, W) each.
    Empty when scikit-learn is not installed."""
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        return []
    photos = []
    for image in load_sample_images().images:  # uint8 (427, 640, 3)
        h, w = image.shape[:2]
        if w * height > h * width:  # too wide: crop the width
            crop = max(1, round(h * width / height))
            left = (w - crop) // 2
            image = image[:, left:left + crop]
        else:
            crop = max(1, round(w * height / width))
            top = (h - crop) // 2
            image = image[top:top + crop]
        try:
            from PIL import Image

            resized = np.asarray(
                Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.BILINEAR),
                dtype=np.float32,
            ).transpose(2, 0, 1)
        except ImportError:
            t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
            resized = torch.nn.functional.interpolate(
                t, size=(height, width), mode="bilinear", align_corners=False, antialias=True
            )[0].numpy()
        mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
        std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
        photos.append((resized / 255.0 - mean) / std)
    return photos


def default_inputs(example_input: torch.Tensor) -> list[torch.Tensor]:
    """The inputs `verify_onnx` uses when none are given, each shaped like `example_input`.

    For an image batch (N, 3, H, W): the two scikit-learn sample photos (input i holds N rows
    cycling through the photos starting at photo i) plus 2 seeded standard-normal tensors; for
    any other shape, or without scikit-learn, 4 seeded standard-normal tensors. Integer inputs
    get seeded random integers within the example's value range instead.
    """
    shape = tuple(example_input.shape)
    generator = torch.Generator().manual_seed(_SEED)
    if not example_input.is_floating_point():
        low, high = int(example_input.min()), int(example_input.max()) + 1
        return [torch.randint(low, high, shape, generator=generator, dtype=example_input.dtype)
                .to(example_input.device) for _ in range(4)]
    inputs = []
    if len(shape) == 4 and shape[1] == 3 and shape[0] >= 1:
        photos = _sample_photos(shape[2], shape[3])
        for start in range(len(photos)):
            rows = [photos[(start + i) % len(photos)] for i in range(shape[0])]
            inputs.append(torch.from_numpy(np.stack(rows)))
    while len(inputs) < 4:
        inputs.append(torch.randn(shape, generator=generator))
    return [x.to(device=example_input.device, dtype=example_input.dtype) for x in inputs]


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def _run_isolated(onnx_path: Path, arrays: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Run the arrays in ``python -m slimdeploy.onnx_runner``, a process that never imports torch."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="slimdeploy-parity-") as tmp:
        inputs, outputs = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(inputs, **{f"x{i}": a for i, a in enumerate(arrays)})
        proc = subprocess.run(
            [sys.executable, "-m", "slimdeploy.onnx_runner", str(onnx_path), str(inputs), str(outputs)],
            capture_output=True, text=True, env=env,
        )
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            detail = lines[-1] if lines else f"exit code {proc.returncode}"
            prefix = "slimdeploy.onnx_runner: error: "
            detail = detail[len(prefix):] if detail.startswith(prefix) else detail
            if proc.returncode == EXIT_TORCH_IMPORTED:
                raise SlimdeployError(f"the isolated ONNX runner imported torch: {detail}")
            raise SlimdeployError(detail)
        with np.load(outputs, allow_pickle=False) as data:
            runs = []
            for i in range(len(arrays)):
                run = [data[f"y{i}"]]
                while f"y{i}_{len(run)}" in data.files:
                    run.append(data[f"y{i}_{len(run)}"])
                runs.append(run)
            return runs


def verify_onnx(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    example_input: torch.Tensor,
    inputs: Sequence[torch.Tensor] | None = None,
    atol: float = ATOL,
    rtol: float = RTOL,
    isolated: bool = True,
    stol: float = STOL,
) -> ParityReport:
    """Compare `model` (eval mode, no_grad, the caller's mode untouched) with ONNX Runtime (CPU).

    `inputs` default to `default_inputs(example_input)`: two real photos plus two seeded normal
    tensors for an (N, 3, H, W) image batch, else four seeded normal tensors. With `isolated`,
    ONNX Runtime runs in a ``python -m slimdeploy.onnx_runner`` subprocess that never imports
    torch; otherwise in this process. Every output the model returns is compared with the graph
    output of the same place.

    Figures, over all inputs and output elements, with ``t`` PyTorch's output and ``o`` ORT's:
    ``max_abs_error = max |o - t|``; ``max_rel_error = max |o - t| / max(|t|, 1e-3)`` (the floor
    keeps near-zero outputs from producing huge ratios); ``max_scaled_error = max |o - t| / range``
    with ``range`` the spread (max - min) of that output over all inputs; ``top1_agreement`` =
    fraction of rows whose argmax agrees, for 2-D (N, C>1) outputs, else None. NaN matches only NaN.
    ``passed`` holds when every element satisfies ``|o - t| <= atol + rtol * |t|`` (numpy's
    ``allclose``) or ``|o - t| <= stol * range``, and, where defined, top-1 agreement is 1.0
    (``stol=0`` keeps the elementwise rule alone). Shape mismatches raise `ParityError`;
    unloadable files and runner failures raise `SlimdeployError`.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise SlimdeployError(f"ONNX file {onnx_path} does not exist")
    inputs = list(inputs) if inputs is not None else default_inputs(example_input)
    if not inputs:
        raise SlimdeployError("verify_onnx needs at least one input")
    with _eval_model(model) as whole, torch.no_grad():
        clone, graph_stops = adapters.export_view(whole)
        runs = [named_tensors(clone(x)) for x in inputs]
    names = [name for name, _ in runs[0]]
    reference = [[_to_numpy(t) for _, t in run] for run in runs]
    arrays = [_to_numpy(x) for x in inputs]
    candidate = _run_isolated(onnx_path, arrays) if isolated else run_onnx_outputs(onnx_path, arrays)
    figures = compare(reference, candidate, names, atol, rtol, stol)
    return ParityReport(n_inputs=len(inputs), atol=atol, rtol=rtol, stol=stol, runtime=runtime_name(),
                        isolated=isolated, graph_stops=graph_stops, **figures)
