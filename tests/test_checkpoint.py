import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from slimdeploy.analysis import analyse
from slimdeploy.checkpoint import load, load_model, save
from slimdeploy.errors import SlimdeployError
from slimdeploy.prune import prune
from slimdeploy.zoo import build


@pytest.fixture(scope="module")
def pruned_resnet():
    model = build("torchvision:resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    analysis = analyse(model, x)
    return prune(model, analysis.space.random(5), x, analysis=analysis).eval(), x


def test_loads_in_a_fresh_process_without_pickle(pruned_resnet, tmp_path):
    pruned, x = pruned_resnet
    save(pruned, tmp_path / "m")
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(pruned(x), tmp_path / "y.pt")
    code = f"""
import torch, slimdeploy
model = slimdeploy.load({str(tmp_path / 'm')!r})
x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)
y = torch.load({str(tmp_path / 'y.pt')!r}, weights_only=True)
assert not model.training
print(float((model(x) - y).abs().max()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) == 0.0
    manifest = json.loads((tmp_path / "m" / "slimdeploy.json").read_text())
    assert manifest["source"] == "torchvision:resnet18" and len(manifest["steps"]) == 1
    assert not (tmp_path / "m" / "model.pkl").exists()


def test_pruning_a_loaded_model_again_records_both_steps(pruned_resnet, tmp_path):
    pruned, x = pruned_resnet
    save(pruned, tmp_path / "a")
    again = load_model(str(tmp_path / "a"))
    analysis = analyse(again, x)
    twice = prune(again, analysis.space.uniform(0.5), x, analysis=analysis).eval()
    save(twice, tmp_path / "b")
    reloaded = load(tmp_path / "b")
    with torch.no_grad():
        assert torch.equal(reloaded(x), twice(x))
    assert len(json.loads((tmp_path / "b" / "slimdeploy.json").read_text())["steps"]) == 2


def test_model_without_a_spec_needs_explicit_pickle_opt_in_on_save_and_load(tmp_path):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(SlimdeployError, match="allow_pickle=True"):
        save(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    save(model, tmp_path / "m", allow_pickle=True)
    with pytest.raises(SlimdeployError, match="unpickling can run arbitrary code"):
        load(tmp_path / "m")
    assert isinstance(load(tmp_path / "m", allow_pickle=True), nn.Sequential)


def test_save_replaces_an_earlier_output_but_never_a_foreign_directory(pruned_resnet, tmp_path):
    pruned, _ = pruned_resnet
    save(pruned, tmp_path / "m")
    save(pruned, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["slimdeploy.json", "weights.pt", "widths.json"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(SlimdeployError, match="not a slimdeploy output"):
        save(pruned, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "mine"]


def test_corrupt_directories_give_clear_errors(tmp_path):
    with pytest.raises(SlimdeployError, match="not a slimdeploy model directory"):
        load(tmp_path)
    (tmp_path / "slimdeploy.json").write_text("{oops")
    with pytest.raises(SlimdeployError, match="cannot read"):
        load(tmp_path)
