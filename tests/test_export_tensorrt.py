"""TensorRT export behind the parity gate (slimdeploy/export_tensorrt.py, the tensorrt plugin's deploy.py).

On a machine without TensorRT or a GPU (this project's CI) the refusal is tested for real: one
line naming what is missing, nothing written. The engine tests run only where `tensorrt` imports
and torch sees a GPU; elsewhere they are skipped with the reason.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn as nn

from slimdeploy.errors import SlimdeployError
from slimdeploy.export_tensorrt import export_engine, export_tensorrt
from slimdeploy.runtimes import get_runtime

HAS_CUDA = torch.cuda.is_available()
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
NO_ENGINE = "TensorRT is not installed" if not HAS_TENSORRT else "CUDA not available" if not HAS_CUDA else ""
SHAPE = (2, 3, 32, 32)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


@pytest.mark.skipif(not NO_ENGINE, reason="TensorRT and a GPU are both here")
def test_without_tensorrt_or_a_gpu_the_export_says_what_is_missing_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out" / "model.engine"
    with pytest.raises(SlimdeployError) as error:
        export_tensorrt(small_net(), torch.randn(*SHAPE), out)
    message = str(error.value)
    assert message.startswith("cannot build a TensorRT engine on this machine: ") and "\n" not in message
    if not HAS_TENSORRT:
        assert "TensorRT is not installed; pip install tensorrt" in message
    if not HAS_CUDA:
        assert "there is no NVIDIA GPU (CUDA is not available" in message
    assert list(tmp_path.iterdir()) == []  # not even the output's folder
    with pytest.raises(SlimdeployError, match="cannot build a TensorRT engine"):
        get_runtime("tensorrt").run_compiled(tmp_path / "model.engine", [])


def test_bad_precision_and_runtimes_that_compile_nothing_are_refused_before_any_work(tmp_path):
    with pytest.raises(SlimdeployError, match="precision must be one of fp32, fp16"):
        export_tensorrt(small_net(), torch.randn(*SHAPE), tmp_path / "m.engine", precision="int8")
    with pytest.raises(SlimdeployError, match="'onnxruntime' runs ONNX files as they are; it compiles nothing"):
        export_engine(small_net(), torch.randn(*SHAPE), tmp_path / "m.engine", get_runtime("onnxruntime"))
    assert get_runtime("tensorrt").compiled_suffix == ".engine" and get_runtime("onnxruntime").compiled_suffix is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(bool(NO_ENGINE), reason=NO_ENGINE or "runs")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_export_passes_the_parity_gate_and_the_file_runs_again(tmp_path, precision):
    model, x = small_net(), torch.randn(*SHAPE)
    out = tmp_path / f"{precision}.engine"
    report = export_tensorrt(model, x, out, precision=precision)
    assert report.passed, report.summary()
    assert report.n_inputs == 4 and report.top1_agreement == 1.0 and "tensorrt" in report.runtime
    assert (report.atol, report.rtol) == ((1e-4, 1e-3) if precision == "fp32" else (1e-2, 1e-2))
    assert out.is_file() and out.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left behind
    # The written file is a working engine: it reproduces PyTorch on a new input.
    fresh = torch.randn(*SHAPE)
    with torch.no_grad():
        expected = model(fresh).numpy()
    got, = get_runtime("tensorrt", {"precision": precision}).run_compiled(out, [fresh.numpy()])
    assert got.shape == expected.shape and abs(got - expected).max() <= (1e-3 if precision == "fp32" else 5e-2)


@pytest.mark.skipif(bool(NO_ENGINE), reason=NO_ENGINE or "runs")
def test_an_engine_that_fails_the_gate_is_not_written(tmp_path):
    out = tmp_path / "strict.engine"
    report = export_tensorrt(small_net(), torch.randn(*SHAPE), out, precision="fp16", atol=0.0, rtol=0.0)
    assert not report.passed and report.n_mismatched > 0
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_to_tensorrt_without_tensorrt_or_a_gpu_is_one_line_exit_2_and_nothing_written(tmp_path):
    import subprocess
    import sys

    try:
        get_runtime("tensorrt", {}).check_compile()
        pytest.skip("this machine can build TensorRT engines")
    except SlimdeployError:
        pass
    done = subprocess.run([sys.executable, "-m", "slimdeploy", "export", "slimdeploy.models:cifar_resnet8",
                           "--input-shape", "1,3,32,32", "--format", "tensorrt", "--out", str(tmp_path / "o" / "m.engine")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "cannot build a TensorRT engine on this machine" in done.stderr
    assert not (tmp_path / "o").exists()
