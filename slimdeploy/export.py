"""Export a PyTorch model to ONNX and check that ONNX Runtime computes what PyTorch computes."""
from __future__ import annotations

import contextlib
import copy
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from .errors import SlimdeployError
from .onnx_runner import EXIT_TORCH_IMPORTED, _last_line, run_onnx, runtime_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REL_FLOOR = 1e-3  # denominator floor of the relative error, see `verify_onnx`
_SEED = 0
_TWO_GB = 2**31


def _error_line(exc: BaseException) -> str:
    """The last line of the innermost cause (the dynamo exporter wraps the real error in boilerplate)."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return re.sub(r"\x1b\[[0-9;]*m", "", _last_line(exc))


class ParityError(SlimdeployError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerances."""


@dataclass
class ParityReport:
    """How closely ONNX Runtime reproduces PyTorch on `n_inputs` inputs (see `verify_onnx`)."""

    max_abs_error: float
    max_rel_error: float
    top1_agreement: float | None
    n_inputs: int
    n_mismatched: int  # output elements outside atol + rtol * |torch|
    n_elements: int
    atol: float
    rtol: float
    passed: bool
    runtime: str
    isolated: bool

    def to_json(self) -> dict:
        """A JSON-safe dict (non-finite errors become the strings "inf" / "nan")."""
        out = asdict(self)
        for key in ("max_abs_error", "max_rel_error"):
            if not math.isfinite(out[key]):
                out[key] = str(out[key])
        return out

    def summary(self) -> str:
        """One line with every figure that decides `passed`."""
        top1 = "n/a" if self.top1_agreement is None else f"{self.top1_agreement:.1%}"
        return (
            f"max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g}, "
            f"top-1 agreement {top1}, {self.n_mismatched} of {self.n_elements} elements outside "
            f"atol={self.atol:g} + rtol={self.rtol:g}*|torch| over {self.n_inputs} inputs ({self.runtime})"
        )

    def raise_if_failed(self) -> None:
        """Raise `ParityError` with the figures when the check did not pass."""
        if not self.passed:
            raise ParityError(f"ONNX output does not match PyTorch: {self.summary()}")


@contextlib.contextmanager
def _eval_model(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode without changing the caller's: a copy, else the original restored."""
    try:
        clone = copy.deepcopy(model)
    except Exception:  # some modules hold state deepcopy refuses; fall back to restoring modes
        clone = None
    if clone is not None:
        yield clone.eval()
        return
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model.eval()
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


def _export_once(model: nn.Module, example_input: torch.Tensor, f: Path, opset: int,
                 dynamic_batch: bool, dynamo: bool) -> None:
    kwargs: dict = dict(input_names=["input"], output_names=["output"], opset_version=opset, dynamo=dynamo)
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
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
    one output ``output``; with `dynamic_batch` their first axis is the symbolic ``batch``. The file is passed through
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
        with _eval_model(model) as clone, torch.no_grad():
            try:
                _export_once(clone, example_input, tmp, opset, dynamic_batch, dynamo=False)
            except Exception as legacy_error:
                for leftover in tmpdir.iterdir():
                    leftover.unlink()
                try:
                    _export_once(clone, example_input, tmp, opset, dynamic_batch, dynamo=True)
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


def _first_tensor(output) -> torch.Tensor:
    """The first tensor of a model output (a tensor, or the first leaf of a tuple/list/dict)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)) and output:
        return _first_tensor(output[0])
    raise SlimdeployError(f"the model returned {type(output).__name__}, not a tensor")


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def _run_isolated(onnx_path: Path, arrays: list[np.ndarray]) -> list[np.ndarray]:
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
            return [data[f"y{i}"] for i in range(len(arrays))]


def _compare(reference: list[np.ndarray], candidate: list[np.ndarray], atol: float, rtol: float):
    max_abs = max_rel = 0.0
    mismatched = elements = agree = rows = 0
    for i, (b, a) in enumerate(zip(reference, candidate)):
        if a.shape != b.shape:
            raise ParityError(
                f"ONNX output {i} has shape {tuple(a.shape)}, PyTorch's has {tuple(b.shape)}"
            )
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(a64 == b64, 0.0, np.abs(a64 - b64))  # equal infinities count as equal
        both_nan = np.isnan(a64) & np.isnan(b64)
        diff = np.where(both_nan, 0.0, np.nan_to_num(diff, nan=np.inf))
        rel = diff / np.maximum(np.abs(np.nan_to_num(b64, nan=0.0)), REL_FLOOR)
        outside = ~(diff <= atol + rtol * np.abs(np.nan_to_num(b64, nan=0.0)))
        if diff.size:
            max_abs = max(max_abs, float(diff.max()))
            max_rel = max(max_rel, float(rel.max()))
        mismatched += int(outside.sum())
        elements += diff.size
        if b.ndim == 2 and b.shape[1] > 1:
            agree += int((a64.argmax(axis=1) == b64.argmax(axis=1)).sum())
            rows += b.shape[0]
    top1 = agree / rows if rows else None
    return max_abs, max_rel, top1, mismatched, elements


def verify_onnx(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    example_input: torch.Tensor,
    inputs: Sequence[torch.Tensor] | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    isolated: bool = True,
) -> ParityReport:
    """Compare `model` (eval mode, no_grad, the caller's mode untouched) with ONNX Runtime (CPU).

    `inputs` default to `default_inputs(example_input)`: two real photos plus two seeded normal
    tensors for an (N, 3, H, W) image batch, else four seeded normal tensors. With `isolated`,
    ONNX Runtime runs in a ``python -m slimdeploy.onnx_runner`` subprocess that never imports
    torch; otherwise in this process.

    Figures, over all inputs and output elements, with ``t`` PyTorch's output and ``o`` ORT's:
    ``max_abs_error = max |o - t|``; ``max_rel_error = max |o - t| / max(|t|, 1e-3)`` (the floor
    keeps near-zero outputs from producing huge ratios); ``top1_agreement`` = fraction of rows
    whose argmax agrees, for 2-D (N, C>1) outputs, else None. NaN matches only NaN.
    ``passed`` holds when every element satisfies ``|o - t| <= atol + rtol * |t|`` (numpy's
    ``allclose``) and, where defined, top-1 agreement is 1.0. Shape mismatches raise `ParityError`;
    unloadable files and runner failures raise `SlimdeployError`.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise SlimdeployError(f"ONNX file {onnx_path} does not exist")
    inputs = list(inputs) if inputs is not None else default_inputs(example_input)
    if not inputs:
        raise SlimdeployError("verify_onnx needs at least one input")
    with _eval_model(model) as clone, torch.no_grad():
        reference = [_to_numpy(_first_tensor(clone(x))) for x in inputs]
    arrays = [_to_numpy(x) for x in inputs]
    candidate = _run_isolated(onnx_path, arrays) if isolated else run_onnx(onnx_path, arrays)
    max_abs, max_rel, top1, mismatched, elements = _compare(reference, candidate, atol, rtol)
    return ParityReport(
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        top1_agreement=top1,
        n_inputs=len(inputs),
        n_mismatched=mismatched,
        n_elements=elements,
        atol=atol,
        rtol=rtol,
        passed=mismatched == 0 and (top1 is None or top1 == 1.0),
        runtime=runtime_name(),
        isolated=isolated,
    )
