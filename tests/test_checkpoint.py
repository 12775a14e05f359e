import json
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_a_model_analysed_part_by_part_reloads_with_the_same_parts(tmp_path):
    """On a busy machine the time bound can split a model into parts that a quicker machine analyses
    whole; the saved step records the parts, so the replay finds the same groups anywhere."""
    model = build("torchvision:resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    parts = analyse(model, x, plan=["layer1", "layer3"])  # what a fallback to some children leaves
    assert [s.path for s in parts.scopes] == ["layer1", "layer3"]
    assert parts.space.fingerprint != analyse(model, x).space.fingerprint
    assert {g.name for g in parts.space} <= {n for n, _ in model.named_modules() if n.startswith(("layer1", "layer3"))}
    pruned = prune(model, parts.space.random(3), x, analysis=parts).eval()
    save(pruned, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "slimdeploy.json").read_text())["steps"][0]["scopes"] == ["layer1", "layer3"]
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "m")(x), pruned(x))
    with pytest.raises(SlimdeployError, match="plan names a part this model does not have"):
        analyse(model, x, plan=["layer9"])


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
    with pytest.raises(SlimdeployError, match="slimdeploy.json is not valid JSON.*damaged"):
        load(tmp_path)


# ----------------------------------------------------------------------------- damaged saved models

SMALL_SPEC, SMALL_SHAPE = "slimdeploy.models:cifar_resnet8", (1, 3, 32, 32)
SAVED_FILES = ("slimdeploy.json", "widths.json", "weights.pt")


@pytest.fixture(scope="module")
def saved_small(tmp_path_factory) -> Path:
    """A pruned ResNet-8 saved as a recipe (all three files)."""
    model = build(SMALL_SPEC).eval()
    x = torch.randn(*SMALL_SHAPE)
    analysis = analyse(model, x)
    directory = tmp_path_factory.mktemp("saved") / "m"
    save(prune(model, analysis.space.uniform(0.5), x, analysis=analysis), directory)
    return directory


def _damaged_copy(saved: Path, where: Path, name: str, damage: str) -> Path:
    """A copy of `saved` with file `name` corrupted (every 7th byte flipped) or truncated to half."""
    copy = where / f"{name}-{damage}"
    shutil.copytree(saved, copy)
    data = bytearray((copy / name).read_bytes())
    if damage == "corrupt":
        for i in range(0, len(data), 7):
            data[i] ^= 0x5A
    else:
        del data[len(data) // 2:]
    (copy / name).write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("damage", ("corrupt", "truncate"))
@pytest.mark.parametrize("name", SAVED_FILES)
def test_a_corrupted_or_truncated_saved_model_file_is_named_as_damaged(saved_small, tmp_path, name, damage):
    with pytest.raises(SlimdeployError) as error:
        load(_damaged_copy(saved_small, tmp_path, name, damage))
    message = str(error.value)
    assert str(tmp_path / f"{name}-{damage}" / name) in message and "re-create the directory" in message
    assert "\n" not in message


def test_the_cli_ends_in_one_line_on_each_damaged_file_and_writes_nothing(saved_small, tmp_path):
    """Each file corrupted and truncated, through `export` or `inspect` as a user runs them (both
    commands see every file): one line naming the file, exit 2, nothing written. The six commands
    run side by side (each starts torch)."""
    commands = {("slimdeploy.json", "corrupt"): "export", ("slimdeploy.json", "truncate"): "inspect",
                ("widths.json", "corrupt"): "inspect", ("widths.json", "truncate"): "export",
                ("weights.pt", "corrupt"): "export", ("weights.pt", "truncate"): "inspect"}
    runs = []
    for (name, damage), command in commands.items():
        directory = _damaged_copy(saved_small, tmp_path, name, damage)
        out = tmp_path / f"out-{name}-{damage}"
        argv = [command, str(directory)] + (["--out", str(out / "model.onnx")] if command == "export" else [])
        proc = subprocess.Popen([sys.executable, "-m", "slimdeploy", *argv], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        runs.append((proc, directory / name, out, command))
    for proc, damaged, out, command in runs:
        stdout, stderr = proc.communicate(timeout=300)
        lines = stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (command, damaged, stderr)
        assert lines[0].startswith(f"slimdeploy: error: {damaged} ") and "re-create the directory" in lines[0]
        assert stdout == "" and not out.exists()  # not even the output's folder


@pytest.mark.parametrize("edit, file, reason", [
    (lambda m: [m], "slimdeploy.json", "holds a JSON list"),
    (lambda m: {**m, "weights": "../weights.pt"}, "slimdeploy.json", "not a file in the directory"),
    (lambda m: {**m, "input_shape": [1, 3, "32", 32]}, "slimdeploy.json", "input_shape"),
    (lambda m: {**m, "steps": [{"widths": 5}]}, "slimdeploy.json", "malformed pruning steps"),
    (lambda m: {**m, "steps": [{**m["steps"][0], "scopes": "layer1"}]}, "slimdeploy.json", "malformed pruning steps"),
    (lambda m: {**m, "format": "slimdeploy.model/99"}, "slimdeploy.json", "has format"),
])
def test_a_manifest_edited_into_nonsense_is_named_as_damaged(saved_small, tmp_path, edit, file, reason):
    copy = tmp_path / "m"
    shutil.copytree(saved_small, copy)
    manifest = json.loads((copy / "slimdeploy.json").read_text())
    (copy / "slimdeploy.json").write_text(json.dumps(edit(manifest)))
    with pytest.raises(SlimdeployError, match=f"{file} .*{reason}.*damaged"):
        load(copy)


def test_widths_or_weights_that_disagree_with_the_manifest_are_named(saved_small, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(saved_small, copy)
    widths = json.loads((copy / "widths.json").read_text())
    group = sorted(widths["widths"])[0]
    widths["widths"][group] += 8
    (copy / "widths.json").write_text(json.dumps(widths))
    with pytest.raises(SlimdeployError, match="widths.json disagrees with the last pruning step"):
        load(copy)
    shutil.copy(saved_small / "widths.json", copy / "widths.json")
    torch.save(build(SMALL_SPEC).state_dict(), copy / "weights.pt")  # the unpruned model's weights
    with pytest.raises(SlimdeployError, match="weights.pt does not fit the model slimdeploy.json describes"):
        load(copy)
    torch.save([1, 2, 3], copy / "weights.pt")
    with pytest.raises(SlimdeployError, match="weights.pt holds a list, not a state dict"):
        load(copy)
    (copy / "weights.pt").unlink()
    with pytest.raises(SlimdeployError, match="weights.pt is missing"):
        load(copy)
