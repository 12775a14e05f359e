import json
import subprocess
import sys

import pytest

from slimdeploy.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "slimdeploy", *args], capture_output=True, text=True, timeout=600)


def test_inspect_json_lists_groups_macs_params_and_fingerprint(capsys):
    assert main(["inspect", "torchvision:resnet18", "--input-shape", "1,3,64,64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"] == 11689512 and report["macs"] > 0
    assert len(report["structure"]) == 16
    names = [g["name"] for g in report["groups"]]
    assert "conv1" in names and "fc" not in names
    conv1 = next(g for g in report["groups"] if g["name"] == "conv1")
    assert conv1["width"] == 64 and "layer1.0.conv1" in conv1["layers"]


def test_prune_then_export_from_the_command_line_runs_in_onnxruntime_without_torch(tmp_path):
    out = tmp_path / "d"
    done = run_cli("prune", "torchvision:mobilenet_v3_small", "--widths", "0.5", "--input-shape", "1,3,64,64",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["params"]["after"] < 0.6 * summary["params"]["before"]
    assert sorted(p.name for p in out.iterdir()) == ["slimdeploy.json", "weights.pt", "widths.json"]

    done = run_cli("export", str(out), "--format", "onnx", "--out", str(out / "m.onnx"), "--dynamic-batch")
    assert done.returncode == 0, done.stderr
    parity = json.loads(done.stdout)["parity"]
    assert parity["passed"] and parity["isolated"] and parity["top1_agreement"] == 1.0
    code = ("import sys, numpy as np, onnxruntime as ort; s = ort.InferenceSession(sys.argv[1]); "
            "y = s.run(None, {'input': np.zeros((2, 3, 64, 64), np.float32)})[0]; "
            "assert 'torch' not in sys.modules; print(y.shape)")
    done = subprocess.run([sys.executable, "-c", code, str(out / "m.onnx")], capture_output=True, text=True)
    assert done.stdout.strip() == "(2, 1000)", done.stderr


@pytest.mark.parametrize("args, message", [
    (["inspect", "torchvision:resnet_nope"], "unknown torchvision model 'resnet_nope'; did you mean"),
    (["inspect", "nonsense"], "unknown model 'nonsense'"),
    (["inspect", "no_such_pkg:factory"], "cannot import 'no_such_pkg'"),
    (["inspect", "torchvision:resnet18", "--input-shape", "1,3,x"], "bad input shape"),
    (["inspect", "torchvision:resnet18", "--input-shape", "1,5,64,64"], "does not run on an input of shape"),
    (["prune", "torchvision:resnet18", "--input-shape", "1,3,64,64", "--widths", "missing.json", "--out", "o"],
     "bad widths 'missing.json'"),
    (["prune", "torchvision:resnet18", "--input-shape", "1,3,64,64", "--widths", "2", "--out", "o"],
     "must be in (0, 1]"),
    (["prune", "torchvision:resnet18", "--input-shape", "1,3,64,64", "--widths", "other.json", "--out", "o"],
     "made for structure"),
    (["prune", "torchvision:resnet18", "--input-shape", "1,3,64,64", "--widths", "0.5", "--ignore", "layer9",
      "--out", "o"], "no layer named layer9"),
    (["export", "pickled", "--out", "o.onnx"], "unpickling can run arbitrary code"),
])
def test_bad_input_is_one_clear_line_exit_code_2_and_nothing_written(tmp_path, monkeypatch, capsys, args, message):
    (tmp_path / "other.json").write_text(json.dumps(
        {"format": "slimdeploy.widths/1", "structure": "0123456789abcdef", "widths": {}}))
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "slimdeploy.json").write_text(json.dumps(
        {"format": "slimdeploy.model/1", "pickle": "model.pkl"}))
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slimdeploy: error: ") and message in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_command_exits_2_from_a_real_process():
    done = run_cli("inspect", "torchvision:resnet_nope")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "did you mean" in done.stderr
