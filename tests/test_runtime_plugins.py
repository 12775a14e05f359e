"""The torch and tensorrt runtime plugins, found through entry points as any third party's.

CUDA and TensorRT tests run only where torch sees a GPU and `tensorrt` imports; elsewhere they
are skipped with the reason. Measurements here are capped at about a second each, on one thread.
"""
import importlib.util
import json
import shutil
import textwrap
from importlib.metadata import entry_points

import pytest
import torch
import torch.nn as nn

from slimdeploy.errors import SlimdeployError
from slimdeploy.latency.measure import measure
from slimdeploy.runtimes import GROUP, device_fingerprint, get_runtime, runtime_names

HAS_CUDA = torch.cuda.is_available()
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
NO_TRT_ENGINE = "TensorRT is not installed" if not HAS_TENSORRT else "CUDA not available" if not HAS_CUDA else ""
SHAPE = (1, 3, 32, 32)
GPU_SHAPE = (8, 3, 128, 128)  # large enough that the wide net's GPU work outweighs kernel-launch gaps
QUICK = dict(warmup_s=0.1, max_seconds=1.0)

TINYNETS = """
import torch.nn as nn

def net(width=8):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))

def narrow():
    return net(8)
"""


def conv_net(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)).eval()


@pytest.fixture
def tinynets(tmp_path, monkeypatch):
    """A module `slimdeploy_test_tinynets` importable by model spec (so models save as recipes)."""
    (tmp_path / "slimdeploy_test_tinynets.py").write_text(textwrap.dedent(TINYNETS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "slimdeploy_test_tinynets"


def torch_runtime(**options):
    return get_runtime("torch", {"threads": 1, **options})


# ----------------------------------------------------------------------------- discovery


def test_plugins_are_found_through_entry_points():
    assert {"onnxruntime", "torch", "tensorrt"} <= set(runtime_names())
    values = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    assert values["torch"] == "slimdeploy_torch:TorchRuntime"
    assert values["tensorrt"] == "slimdeploy_tensorrt:TensorRTRuntime"
    # The default runtime comes with the core distribution (registered by its entry point); the others apart.
    dists = {ep.name: ep.dist.name for ep in entry_points(group=GROUP)}
    assert dists["onnxruntime"] == dists["remote"] == "slimdeploy"
    assert dists["torch"] == "slimdeploy-torch" and dists["tensorrt"] == "slimdeploy-tensorrt"


# ----------------------------------------------------------------------------- torch, CPU


def test_torch_eager_cpu_measurement_is_sane():
    before = torch.get_num_threads()
    m = torch_runtime().measure(conv_net(8), SHAPE, **QUICK)
    assert 0 < m.min_ms <= m.median_ms < 1000 and m.runs >= 30 and m.seconds < 3
    assert (m.threads, m.batch, tuple(m.input_shape)) == (1, 1, SHAPE)
    assert m.device["runtime"] == "torch" and m.device["runtime_version"] == torch.__version__
    assert m.device["threads"] == 1 and m.device["input_shape"] == list(SHAPE)
    assert (m.device["device"], m.device["mode"], m.device["precision"]) == ("cpu", "eager", "fp32")
    assert torch.get_num_threads() == before  # restored after the timed runs


def test_wider_net_is_slower_than_narrower_in_compare():
    result = torch_runtime().compare([conv_net(8), conv_net(32)], SHAPE, rounds=4, warmup_s=0.1, max_seconds=2.0)
    assert result.ratios[0] == 1.0 and result.ratios[1] > 1.0
    assert all(m.device["runtime"] == "torch" for m in result.measurements)


def test_runtime_device_matches_the_timer_device():
    rt = torch_runtime()
    timer = rt.timer(conv_net(8), SHAPE)
    assert rt.fingerprint(SHAPE) == device_fingerprint(timer.device())


def test_timer_copies_an_in_memory_module():
    model = conv_net(8).train()
    timer = torch_runtime().timer(model, SHAPE)
    assert model.training and not timer.model.training
    assert timer.time_runs(3) and len(timer.warm_up(2, 0.0)) >= 2


def test_export_writes_a_directory_the_timer_loads(tinynets, tmp_path):
    from slimdeploy.zoo import build

    rt = torch_runtime()
    model = build(f"{tinynets}:narrow").eval()
    x = torch.randn(*SHAPE)
    artifact = rt.export(model, x, tmp_path / f"model{rt.artifact_suffix}")
    assert artifact.is_dir() and (artifact / "slimdeploy.json").exists()
    assert json.loads((artifact / "torch_runtime.json").read_text())["input_shape"] == list(SHAPE)
    timer = rt.timer(artifact)  # the shape comes from the artifact
    assert timer.input_shape == SHAPE
    with torch.no_grad():
        assert torch.equal(timer.model(timer.input), model(timer.input))
    assert rt.measure(artifact, **QUICK).median_ms > 0


def test_pruned_recipe_records_its_input_shape(tinynets, tmp_path):
    from slimdeploy.analysis import analyse
    from slimdeploy.prune import prune
    from slimdeploy.zoo import build

    model = build(f"{tinynets}:narrow").eval()
    x = torch.randn(1, 3, 16, 16)
    analysis = analyse(model, x)
    pruned = prune(model, analysis.space.uniform(0.5), x, analysis=analysis).eval()
    artifact = torch_runtime().export(pruned, x, tmp_path / "pruned")
    assert torch_runtime().timer(artifact).input_shape == (1, 3, 16, 16)


def test_export_of_a_model_without_spec_says_what_to_do(tmp_path):
    with pytest.raises(SlimdeployError, match="not built from a model spec.*nn.Module itself"):
        torch_runtime().export(conv_net(8), torch.randn(*SHAPE), tmp_path / "m")


def test_timer_errors_are_clear(tmp_path):
    rt = torch_runtime()
    with pytest.raises(SlimdeployError, match="records no input shape; pass input_shape"):
        rt.timer(conv_net(8))
    with pytest.raises(SlimdeployError, match=r"does not run on an input of shape \[1, 5, 32, 32\]"):
        rt.timer(conv_net(8), (1, 5, 32, 32))
    with pytest.raises(SlimdeployError, match="not a slimdeploy model directory"):
        rt.timer(tmp_path / "missing", SHAPE)


@pytest.mark.parametrize("options, message", [
    ({"device": "tpu"}, "device must be cpu or cuda"),
    ({"mode": "fast"}, "mode must be one of eager, compile"),
    ({"precision": "fp16"}, "precision=fp16 needs device=cuda"),
    ({"precision": "int4"}, "precision must be one of fp32, fp16"),
    ({"threads": 0}, "threads must be a positive integer"),
    ({"threads": "many"}, "threads must be a positive integer"),
    ({"batch": "2"}, "has no option 'batch'"),
])
def test_bad_torch_options_are_rejected(options, message):
    with pytest.raises(SlimdeployError, match=message):
        get_runtime("torch", options)


def test_torch_options_from_a_cli_spec_are_parsed():
    rt = get_runtime("torch:mode=compile,threads=2,device=CPU")
    assert rt.options == {"device": "cpu", "mode": "compile", "threads": 2, "precision": "fp32", "seed": 0}
    assert rt.artifact_suffix == ""


def test_compile_failure_names_the_cause_and_suggests_eager(monkeypatch):
    def broken(model, **kwargs):
        def run(*args):
            raise RuntimeError("backend exploded")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(SlimdeployError, match="torch.compile failed.*backend exploded.*mode=eager"):
        torch_runtime(mode="compile").timer(conv_net(8), SHAPE)


def _cxx_compiler():
    return shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


@pytest.mark.skipif(not _cxx_compiler(), reason="torch.compile (inductor) on the CPU needs a C++ compiler; none found")
def test_torch_compile_on_cpu(monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "compile_threads", 1)  # no compile-worker pool on a shared machine
    model = conv_net(8)
    try:
        timer = torch_runtime(mode="compile").timer(model, SHAPE)
    except SlimdeployError as exc:
        pytest.skip(f"torch.compile does not work here: {exc}")
    with torch.inference_mode():
        assert torch.allclose(timer.model(timer.input), model(timer.input), atol=1e-5)
    m = measure(timer, **QUICK)
    assert m.median_ms > 0 and m.device["mode"] == "compile"


# ----------------------------------------------------------------------------- torch, CUDA


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
def test_cuda_device_without_cuda_is_a_clear_error():
    with pytest.raises(SlimdeployError, match="CUDA is not available.*use device=cpu"):
        get_runtime("torch", {"device": "cuda"})


@pytest.mark.skipif(not HAS_CUDA, reason="CUDA not available")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torch_cuda_measurement_with_cuda_events(precision):
    rt = torch_runtime(device="cuda", precision=precision)
    timer = rt.timer(conv_net(16), SHAPE)
    assert timer.input.is_cuda and timer.input.dtype == (torch.float16 if precision == "fp16" else torch.float32)
    m = measure(timer, **QUICK)
    assert 0 < m.median_ms < 1000
    assert m.device["gpu"] == torch.cuda.get_device_name() and m.device["precision"] == precision
    result = rt.compare([conv_net(16), conv_net(256)], GPU_SHAPE, rounds=4, warmup_s=0.1, max_seconds=2.0)
    assert result.ratios[1] > 1.0


# ----------------------------------------------------------------------------- tensorrt


def test_tensorrt_options():
    rt = get_runtime("tensorrt:precision=FP16,workspace_mb=256")
    assert rt.options == {"precision": "fp16", "workspace_mb": 256, "seed": 0}
    assert rt.artifact_suffix == ".onnx"
    assert get_runtime("tensorrt").options == {"precision": "fp32", "seed": 0}
    with pytest.raises(SlimdeployError, match="precision must be one of fp32, fp16"):
        get_runtime("tensorrt", {"precision": "int8"})
    with pytest.raises(SlimdeployError, match="workspace_mb must be a positive integer"):
        get_runtime("tensorrt", {"workspace_mb": "0"})


def test_tensorrt_helpers_work_without_tensorrt():
    from slimdeploy_tensorrt.engine import onnx_source, resolve_shape, torch_dtype

    assert resolve_shape((-1, 3, 32, 32), None, "m") == (1, 3, 32, 32)
    assert resolve_shape((-1, 3, -1, -1), (2, 3, 8, 8), "m") == (2, 3, 8, 8)
    with pytest.raises(SlimdeployError, match="dynamic input dimensions"):
        resolve_shape((1, 3, -1, -1), None, "m")
    with pytest.raises(SlimdeployError, match="dimension 1 is fixed at 3"):
        resolve_shape((1, 3, 32, 32), (1, 4, 32, 32), "m")
    assert torch_dtype(type("DataType", (), {"name": "HALF"})()) == torch.float16
    assert onnx_source(b"abc", "tensorrt") == (b"abc", "<onnx bytes>")
    with pytest.raises(SlimdeployError, match="ONNX file not found"):
        onnx_source("/nonexistent.onnx", "tensorrt")


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_tensorrt_without_the_library_is_a_clear_error(tmp_path):
    rt = get_runtime("tensorrt")
    for use in (lambda: rt.timer(tmp_path / "m.onnx", SHAPE), lambda: rt.device(SHAPE)):
        with pytest.raises(SlimdeployError, match="TensorRT is not installed; pip install tensorrt"):
            use()


@pytest.mark.skipif(bool(NO_TRT_ENGINE), reason=NO_TRT_ENGINE or "runs")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_measures_and_profiles_layers(tmp_path, precision):
    rt = get_runtime("tensorrt", {"precision": precision, "workspace_mb": 256})
    shape = GPU_SHAPE
    paths = [rt.export(conv_net(w), torch.randn(*shape), tmp_path / f"w{w}.onnx") for w in (16, 256)]
    timer = rt.timer(paths[0])
    assert timer.input_shape == shape
    m = measure(timer, **QUICK)
    assert 0 < m.median_ms < 1000
    assert m.device["runtime"] == "tensorrt" and m.device["precision"] == precision and m.device["gpu"]
    layers = timer.layer_times(runs=5)
    assert layers and all(ms >= 0 for ms in layers.values())
    assert rt.compare(paths, shape, rounds=4, warmup_s=0.1, max_seconds=2.0).ratios[1] > 1.0
