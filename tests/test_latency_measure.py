"""slimdeploy.latency.measure on real ONNX Runtime sessions of real exported models."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torchvision

from slimdeploy.errors import SlimdeployError
from slimdeploy.latency.host import available_cores
from slimdeploy_onnxruntime import OrtTimer
from slimdeploy.latency.measure import Comparison, Measurement, measure
from slimdeploy.latency.onnx_files import compare_onnx, measure_onnx

SHAPE = (1, 3, 64, 64)
# Caps that keep each call to a few seconds even when the shared machine is busy.
QUICK = dict(warmup_s=0.1, max_seconds=3.0)


def _tiny_cnn(width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),
    ).eval()


def _export(model: nn.Module, path, dynamic_batch: bool = False) -> str:
    kwargs = {"dynamic_axes": {"x": {0: "batch"}}} if dynamic_batch else {}
    torch.onnx.export(model, torch.randn(*SHAPE), str(path), input_names=["x"],
                      output_names=["y"], dynamo=False, **kwargs)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    return {
        "resnet18": _export(torchvision.models.resnet18(num_classes=10).eval(), root / "resnet18.onnx"),
        "tiny": _export(_tiny_cnn(), root / "tiny.onnx"),
        "tiny_dynamic": _export(_tiny_cnn(), root / "tiny_dynamic.onnx", dynamic_batch=True),
    }


def test_measure_fields_are_sane(models):
    m = measure_onnx(models["resnet18"], threads=1, min_runs=20, **QUICK)
    assert isinstance(m, Measurement)
    assert m.median_ms > 0 and m.iqr_ms >= 0 and m.cv >= 0
    assert m.min_ms <= m.median_ms
    assert m.runs >= 20 and m.rounds >= 1 and m.warmup_runs >= 1
    assert m.threads == 1 and m.batch == 1 and m.input_shape == SHAPE
    assert isinstance(m.stable, bool)
    assert m.cv == pytest.approx(m.iqr_ms / m.median_ms)
    for key in ("cpu", "logical_cores", "runtime", "runtime_version", "provider", "graph_optimization",
                "threads", "input_shape", "platform"):
        assert key in m.device
    assert m.device["provider"] == "CPUExecutionProvider"
    assert m.device["graph_optimization"] == "all"
    assert m.seconds < 10
    if m.background_cores is not None:
        assert m.background_cores >= 0

    data = json.loads(m.to_json())
    assert data["median_ms"] == m.median_ms and data["input_shape"] == list(SHAPE)
    assert Measurement.from_json(m.to_json()) == m


def test_threads_are_honoured_and_recorded(models):
    timer = OrtTimer(models["tiny"], threads=2, optimization="basic")
    assert timer.threads == 2
    options = timer.session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert timer.time_once() > 0
    assert measure(timer, min_runs=10, **QUICK).threads == 2
    assert measure_onnx(models["tiny"], threads=1, min_runs=10, **QUICK).threads == 1
    assert OrtTimer(models["tiny"]).threads == available_cores()
    with pytest.raises(SlimdeployError, match="threads"):
        OrtTimer(models["tiny"], threads=0)


def test_compare_finds_the_bigger_model_slower(models):
    c = compare_onnx([models["tiny"], models["resnet18"]], threads=1, rounds=4, max_seconds=4.0,
                warmup_s=0.1)
    assert isinstance(c, Comparison)
    assert len(c.measurements) == 2 and c.ratios[0] == 1.0 and c.ratio_iqr[0] == 0.0
    # resnet18 has ~100x the FLOPs of the tiny CNN; the measured ratio is far above 1.3.
    assert c.ratios[1] > 1.3, c.to_json()
    assert c.measurements[1].median_ms > c.measurements[0].median_ms
    assert c.speedups[1] == pytest.approx(1 / c.ratios[1])
    assert c.rounds >= 1 and len(c.round_ratios) == c.rounds
    assert all(m.threads == 1 and m.runs >= c.rounds for m in c.measurements)
    assert Comparison.from_json(c.to_json()) == c


def test_compare_needs_two_models_of_one_shape(models, tmp_path):
    with pytest.raises(SlimdeployError, match="two models"):
        compare_onnx([models["tiny"]])
    small = tmp_path / "small.onnx"
    torch.onnx.export(_tiny_cnn(), torch.randn(1, 3, 32, 32), str(small), input_names=["x"], dynamo=False)
    with pytest.raises(SlimdeployError, match="same input shape"):
        compare_onnx([models["tiny"], str(small)])


def test_input_shapes_bytes_and_bad_models(models, tmp_path):
    dynamic = OrtTimer(models["tiny_dynamic"])
    assert dynamic.input_shape == SHAPE and dynamic.batch == 1
    batched = OrtTimer(models["tiny_dynamic"], input_shape=(4, 3, 64, 64))
    assert batched.batch == 4 and batched.feed["x"].shape == (4, 3, 64, 64)
    assert batched.feed["x"].dtype.name == "float32"
    with pytest.raises(SlimdeployError, match="fixed at 64"):
        OrtTimer(models["tiny_dynamic"], input_shape=(1, 3, 32, 32))
    with pytest.raises(SlimdeployError, match="dimensions"):
        OrtTimer(models["tiny"], input_shape=(3, 64, 64))

    with open(models["tiny"], "rb") as f:
        from_bytes = OrtTimer(f.read())
    assert from_bytes.input_shape == SHAPE and from_bytes.time_once() > 0

    with pytest.raises(SlimdeployError, match="not found"):
        OrtTimer(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model")
    with pytest.raises(SlimdeployError, match="could not load"):
        OrtTimer(garbage)
    with pytest.raises(SlimdeployError, match="optimization"):
        OrtTimer(models["tiny"], optimization="fastest")


def test_measure_module_does_not_import_torch():
    code = ("import sys, slimdeploy.latency, slimdeploy.latency.measure; "
            "bad = [m for m in ('torch', 'torchvision', 'onnx') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
