"""ONNX export and parity against ONNX Runtime, on real torchvision models (random weights)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torchvision

from slimdeploy.errors import SlimdeployError
from slimdeploy.export import ParityError, ParityReport, default_inputs, export_onnx, verify_onnx
from slimdeploy.onnx_runner import run_onnx
from slimdeploy.modes import set_eval

ROOT = Path(__file__).resolve().parents[1]
RUNNER_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=RUNNER_ENV, cwd=ROOT)


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    """resnet18 left in train mode by the caller, its export at 1x3x64x64 and the folder."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).train()
    example = torch.randn(1, 3, 64, 64)
    folder = tmp_path_factory.mktemp("resnet18") / "nested" / "dir"  # parent created by export
    path = export_onnx(model, example, folder / "resnet18.onnx")
    return model, example, path


def test_export_and_isolated_verify_pass(resnet18):
    model, example, path = resnet18
    assert path.is_file() and model.training  # the caller's mode is untouched by export
    assert sorted(p.name for p in path.parent.iterdir()) == ["resnet18.onnx"]  # no temp files left
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["output"]

    report = verify_onnx(model, path, example)
    assert model.training and all(m.training for m in model.modules())
    assert report.passed, report.summary()
    assert report.isolated and report.n_inputs == 4
    assert report.max_abs_error < 1e-4 and report.top1_agreement == 1.0
    assert report.runtime.startswith("onnxruntime ") and report.runtime.endswith("CPUExecutionProvider")
    report.raise_if_failed()
    assert json.loads(json.dumps(report.to_json()))["passed"] is True


def test_perturbed_weights_fail_parity_with_numbers(resnet18):
    model, example, path = resnet18
    perturbed = torchvision.models.resnet18(weights=None)
    perturbed.load_state_dict(model.state_dict())
    with torch.no_grad():
        perturbed.fc.weight.add_(0.05 * torch.randn_like(perturbed.fc.weight))
    report = verify_onnx(perturbed, path, example, isolated=False)
    assert not report.passed and not report.isolated
    assert report.max_abs_error > 1e-3 and report.n_mismatched > 0
    with pytest.raises(ParityError) as info:
        report.raise_if_failed()
    message = str(info.value)
    assert isinstance(info.value, SlimdeployError) and "\n" not in message
    for figure in (f"{report.max_abs_error:.3g}", f"{report.max_rel_error:.3g}", "top-1 agreement",
                   "atol=0.0001", "rtol=0.001"):
        assert figure in message


def test_top1_disagreement_fails_even_within_tolerance():
    report = ParityReport(max_abs_error=0.0, max_rel_error=0.0, top1_agreement=0.5, n_inputs=2,
                          n_mismatched=0, n_elements=10, atol=1e-4, rtol=1e-3, passed=False,
                          runtime="onnxruntime", isolated=False)
    with pytest.raises(ParityError, match="top-1 agreement 50.0%"):
        report.raise_if_failed()


def test_dynamic_batch_runs_with_batch_3(tmp_path):
    torch.manual_seed(1)
    model = set_eval(torchvision.models.mobilenet_v2(weights=None))
    path = export_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "mnv2.onnx", dynamic_batch=True)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 64, 64]

    batch = default_inputs(torch.zeros(3, 3, 64, 64))[:3]  # china/flower rows, then a random batch
    (ort,) = run_onnx(path, [batch[0].numpy()], threads=1)
    with torch.no_grad():
        expected = model(batch[0]).numpy()
    assert ort.shape == (3, 1000)
    np.testing.assert_allclose(ort, expected, atol=1e-4, rtol=1e-3)
    report = verify_onnx(model, path, batch[0], inputs=batch, isolated=False)
    assert report.passed and report.top1_agreement == 1.0 and report.n_inputs == 3


def test_runner_module_never_imports_torch():
    proc = _python("-c", "import sys, slimdeploy, slimdeploy.onnx_runner; "
                         "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    assert proc.returncode == 0, proc.stderr


def test_runner_entry_point_on_npz(resnet18, tmp_path):
    model, example, path = resnet18
    xs = [x.numpy() for x in default_inputs(example)]
    np.savez(tmp_path / "in.npz", **{f"x{i}": x for i, x in enumerate(xs)})
    proc = _python("-m", "slimdeploy.onnx_runner", str(path), str(tmp_path / "in.npz"), str(tmp_path / "out.npz"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "out.npz"]
    with np.load(tmp_path / "out.npz") as out:
        ys = [out[f"y{i}"] for i in range(len(xs))]
        assert sorted(out.files) == [f"y{i}" for i in range(len(xs))]
    with torch.no_grad():
        eval_model = torchvision.models.resnet18(weights=None)
        eval_model.load_state_dict(model.state_dict())
        eval_model.eval()
        for x, y in zip(xs, ys):
            np.testing.assert_allclose(y, eval_model(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=1e-3)


def test_runner_exits_3_when_torch_was_imported(resnet18, tmp_path):
    _, example, path = resnet18
    np.savez(tmp_path / "in.npz", x0=example.numpy())
    code = ("import sys, runpy, torch; sys.argv = ['onnx_runner'] + sys.argv[1:]; "
            "runpy.run_module('slimdeploy.onnx_runner', run_name='__main__')")
    proc = _python("-c", code, str(path), str(tmp_path / "in.npz"), str(tmp_path / "out.npz"))
    assert proc.returncode == 3 and "torch was imported" in proc.stderr


def test_corrupt_onnx_file_gives_clear_error(tmp_path, resnet18):
    model, example, _ = resnet18
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an ONNX model\n" * 10)
    with pytest.raises(SlimdeployError, match="cannot load ONNX model .*bad.onnx"):
        run_onnx(bad, [example.numpy()])
    with pytest.raises(SlimdeployError, match="cannot load ONNX model"):
        verify_onnx(model, bad, example, inputs=[example])  # isolated: the runner's message surfaces
    np.savez(tmp_path / "in.npz", x0=example.numpy())
    proc = _python("-m", "slimdeploy.onnx_runner", str(bad), str(tmp_path / "in.npz"), str(tmp_path / "out.npz"))
    assert proc.returncode == 2 and not (tmp_path / "out.npz").exists()
    assert len(proc.stderr.strip().splitlines()) == 1 and "cannot load ONNX model" in proc.stderr
    with pytest.raises(SlimdeployError, match="does not exist"):
        verify_onnx(model, tmp_path / "missing.onnx", example)


class _Untraceable(nn.Module):
    def forward(self, x):
        raise RuntimeError("forward is deliberately broken")


def test_export_failure_names_model_and_leaves_nothing(tmp_path):
    with pytest.raises(SlimdeployError, match=r"_Untraceable.*deliberately broken"):
        export_onnx(_Untraceable(), torch.randn(1, 4), tmp_path / "out" / "m.onnx")
    assert list((tmp_path / "out").iterdir()) == []


def test_non_image_input_uses_random_inputs(tmp_path):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 5))
    example = torch.randn(2, 16)
    inputs = default_inputs(example)
    assert len(inputs) == 4 and all(x.shape == example.shape for x in inputs)
    assert torch.equal(inputs[0], default_inputs(example)[0])  # seeded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_onnx(model, example, tmp_path / "mlp.onnx")
    assert not [w for w in caught if "legacy TorchScript" in str(w.message)]  # deprecation silenced
    report = verify_onnx(model, path, example, isolated=False)
    assert report.passed and report.top1_agreement == 1.0 and report.n_inputs == 4


def test_default_image_inputs_are_normalized_photos():
    inputs = default_inputs(torch.zeros(2, 3, 32, 48))
    assert len(inputs) == 4 and all(x.shape == (2, 3, 32, 48) for x in inputs)
    photo = inputs[0]
    assert not torch.equal(photo[0], photo[1])  # rows cycle through china and flower
    assert torch.equal(photo[0], inputs[1][1]) and torch.equal(photo[1], inputs[1][0])
    lo, hi = (0 - 0.485) / 0.229, (1 - 0.406) / 0.225  # ImageNet-normalized [0, 1] range
    assert lo - 1e-4 <= photo.min() and photo.max() <= hi + 1e-4


class _Erfcx(nn.Module):
    """aten::special_erfcx has no TorchScript-exporter symbolic; the dynamo exporter handles it."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        return torch.special.erfcx(self.linear(x))


def test_falls_back_to_dynamo_exporter(tmp_path):
    torch.manual_seed(3)
    model = _Erfcx()
    path = export_onnx(model, torch.randn(2, 4), tmp_path / "erfcx.onnx", dynamic_batch=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["erfcx.onnx"]  # weights inline, no .data
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    report = verify_onnx(model, path, torch.randn(2, 4), inputs=[torch.randn(5, 4)], isolated=False)
    assert report.passed, report.summary()


class _TwoHeads(nn.Module):
    """A segmentation-like model: {"out": (N, 3, H, W), "aux": (N, 2, H, W)}."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.out, self.aux = nn.Conv2d(8, 3, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        features = self.body(x)
        return {"out": self.out(features), "aux": self.aux(features)}


def test_dict_outputs_become_named_graph_outputs_each_checked(tmp_path):
    torch.manual_seed(4)
    model, example = set_eval(_TwoHeads()), torch.randn(1, 3, 16, 16)
    path = export_onnx(model, example, tmp_path / "two.onnx", dynamic_batch=True)
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == ["output.out", "output.aux"]
    report = verify_onnx(model, path, example)  # isolated: the runner returns every output
    assert report.passed, report.summary()
    assert [(o["name"], o["shape"]) for o in report.outputs] == [("output.out", [1, 3, 16, 16]),
                                                                  ("output.aux", [1, 2, 16, 16])]
    assert report.n_elements == 4 * (3 + 2) * 16 * 16 and report.graph_stops is None
    with torch.no_grad():
        model.aux.bias.add_(0.1)  # only the second output drifts
    drifted = verify_onnx(model, path, example, isolated=False)
    assert not drifted.passed and [o["n_mismatched"] > 0 for o in drifted.outputs] == [False, True]


def test_pruned_segmentation_model_exports_with_parity(tmp_path):
    from slimdeploy.analysis import analyse
    from slimdeploy.prune import prune

    torch.manual_seed(5)
    model = set_eval(torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None,
                                                                               weights_backbone=None))
    x = torch.randn(1, 3, 64, 64)
    analysis = analyse(model, x)
    pruned = prune(model, analysis.space.random(7), x, analysis=analysis)
    assert sum(p.numel() for p in pruned.parameters()) < 0.5 * sum(p.numel() for p in model.parameters())
    path = export_onnx(pruned, x, tmp_path / "seg.onnx")
    report = verify_onnx(pruned, path, x)
    assert report.passed, report.summary()
    assert [(o["name"], o["shape"]) for o in report.outputs] == [("output.out", [1, 21, 64, 64])]


def test_detection_export_stops_before_the_post_processing_and_says_so(tmp_path):
    from slimdeploy.analysis import analyse
    from slimdeploy.prune import prune

    torch.manual_seed(6)
    model = set_eval(torchvision.models.get_model("ssdlite320_mobilenet_v3_large", weights=None,
                                                  weights_backbone=None))
    x = torch.randn(1, 3, 320, 320)
    analysis = analyse(model, x)
    pruned = prune(model, analysis.space.uniform(0.5), x, analysis=analysis)
    path = export_onnx(pruned, x, tmp_path / "det.onnx")
    names = [o.name for o in onnx.load(str(path)).graph.output]
    assert names == [f"output.{kind}.{level}" for kind in ("cls_logits", "bbox_regression") for level in range(6)]
    report = verify_onnx(pruned, path, x)
    assert report.passed, report.summary()
    assert report.outputs[0]["shape"] == [1, 6 * 91, 20, 20]  # 6 anchors x 91 classes at the 20x20 level
    assert "stops at the heads' convolution outputs" in report.graph_stops
    assert "non-maximum suppression" in report.graph_stops


def test_large_activations_pass_on_the_range_and_the_refusal_names_the_option(tmp_path):
    """Inception-V3 with random weights: logits in the hundreds, float32 error ~1e-2 where a logit is ~0."""
    torch.manual_seed(7)
    model = set_eval(nn.Linear(16, 10))
    with torch.no_grad():
        model.weight.mul_(300.0)
        model.weight[9].zero_()
        model.bias[9] = 0.0
    x = torch.randn(1, 16)
    path = export_onnx(model, x, tmp_path / "big.onnx")
    drifted = set_eval(nn.Linear(16, 10))
    drifted.load_state_dict(model.state_dict())
    with torch.no_grad():
        drifted.bias[9] = 0.012  # stands in for the exporter's rounding on a near-zero logit
    report = verify_onnx(drifted, path, x, isolated=False)
    assert report.passed, report.summary()
    assert report.max_rel_error >= 1 and report.max_scaled_error < 1e-4  # |0.012 - 0| / 0.012
    strict = verify_onnx(drifted, path, x, isolated=False, stol=0.0)
    assert not strict.passed and strict.n_mismatched == 4  # one near-zero logit per input
    assert "it would pass with --atol 0.012, --rtol 1 or --stol 1.7e-05 (any one of them)" in strict.summary()
