"""The supernet: extraction equals the shared-weight sub-network, sandwich training, save/load, resume, DDP."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import torchvision

from slimdeploy.data import load_dataset, make_loader
from slimdeploy.errors import SlimdeployError
from slimdeploy.supernet import Supernet, SupernetTraining, load_supernet, sampled_widths, train_supernet
from slimdeploy.zoo import build

SMALL = "slimdeploy.models:cifar_resnet8"
SHAPE = (1, 3, 16, 16)
QUIET_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_vit():
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                 hidden_dim=64, mlp_dim=128, num_classes=10)
    torch.nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts the head at zero
    return model


def lite0():
    from slimdeploy.pretrained import efficientnet_lite0

    return efficientnet_lite0()


@pytest.mark.parametrize("name, build_model", [
    ("resnet18", torchvision.models.resnet18), ("mobilenet_v2", torchvision.models.mobilenet_v2),
    ("efficientnet_lite0 (pretrained)", lite0), ("vit (layer norm and attention over pruned channels)", small_vit)])
def test_extracted_model_computes_what_the_supernet_computes_after_recalibration(name, build_model):
    torch.manual_seed(0)
    model = build_model().eval()
    for m in model.modules():  # trained-looking statistics, so a wrong channel would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 32, 32)
    supernet = Supernet(model, x[:1])
    calibration = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    for seed in range(2):
        widths = supernet.random_widths(random.Random(seed))
        assert widths != supernet.largest()
        with supernet.active(widths):
            supernet.recalibrate(calibration)
            supernet.eval()
            with torch.no_grad():
                shared = supernet(x)
        extracted = supernet.extract(widths)
        with torch.no_grad():
            alone = extracted(x)
        assert (shared - alone).abs().max() <= 1e-4, name
        assert shared.abs().max() > 1e-2  # a meaningful output, not zeros
        kept = {n: p.shape for n, p in extracted.named_parameters()}
        assert sum(p.numel() for p in extracted.parameters()) < sum(p.numel() for p in model.parameters())
        assert kept  # physically smaller, no masks
    with torch.no_grad():
        assert torch.equal(supernet(x), supernet.model(x))  # no widths active: the full model


def test_width_k_keeps_the_k_most_important_channels_and_extract_keeps_exactly_them():
    model = build(SMALL).eval()
    supernet = Supernet(model, torch.randn(*SHAPE))
    name = next(iter(supernet.order))
    conv = dict(supernet.model.named_modules())[name]
    norms = conv.weight.detach().flatten(1).norm(dim=1)
    group = supernet.space.group(name)
    keep = supernet.keep_for({name: 8})[name]
    if group.divisor == 1 and len(group.layers) == 2:  # a conv and its BatchNorm only: plain L2 order
        assert set(torch.nonzero(keep).flatten().tolist()) == set(torch.topk(norms, 8).indices.tolist())
    extracted = supernet.extract(supernet.largest().replace(**{name: 8}))
    pruned_conv = dict(extracted.named_modules())[name]
    assert pruned_conv.out_channels == 8
    assert torch.equal(pruned_conv.weight, conv.weight[torch.nonzero(keep).flatten()])


def test_sandwich_steps_sample_largest_smallest_and_random_widths_reproducibly():
    supernet = Supernet(build(SMALL).eval(), torch.randn(*SHAPE))
    a, b = sampled_widths(supernet, 4, 0, 7), sampled_widths(supernet, 4, 0, 7)
    assert a == b and a[0] == supernet.largest() and a[1] == supernet.smallest() and len(a) == 4
    assert sampled_widths(supernet, 4, 0, 8)[2:] != a[2:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A CIFAR-style ResNet-8 briefly trained on digits, then a supernet trained from it (saved)."""
    model = build(SMALL)
    train, val, _ = load_dataset("digits", input_shape=SHAPE)
    from slimdeploy.train import train_classifier

    train_classifier(model, make_loader(train, 64, shuffle=True), epochs=2, lr=0.05)
    model.eval()
    supernet = Supernet(model, torch.randn(*SHAPE))
    out = tmp_path_factory.mktemp("supernet")
    calibration = [b for _, b in zip(range(3), make_loader(train, 64, shuffle=True, seed=1))]
    held_out = list(make_loader(val, 256))
    before = supernet.scorer(calibration, held_out)(supernet.smallest())
    result = train_supernet(supernet, train, SupernetTraining(epochs=2, lr=0.02, batch_size=64, checkpoint_every=10),
                            out=out, say=lambda text: None)
    return supernet, out, result, before, (calibration, held_out)


def test_sandwich_training_lowers_the_loss_and_lifts_the_smallest_network(trained):
    supernet, out, result, before, (calibration, held_out) = trained
    history = result["history"]
    assert len(history) == 2 and history[1]["loss"] < history[0]["loss"]
    score = supernet.scorer(calibration, held_out)
    smallest, largest = score(supernet.smallest()), score(supernet.largest())
    assert smallest > before + 0.05, (before, smallest)  # trained for the narrow widths too
    assert largest > 0.9 and smallest > 0.6
    assert result["checksums"] and result["world_size"] == 1


def test_a_saved_supernet_loads_back_without_pickle_and_computes_the_same(trained, tmp_path):
    import shutil

    supernet, out, _, _, (calibration, held_out) = trained
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "supernet.json", "weights.pt"]
    manifest = json.loads((out / "supernet.json").read_text())
    assert manifest["format"] == "slimdeploy.supernet/1" and manifest["model"]["source"] == SMALL
    assert set(manifest["order"]) == {g.name for g in supernet.space}
    torch.load(out / "weights.pt", weights_only=True)  # plain tensors only
    again = load_supernet(out)
    widths = supernet.random_widths(random.Random(3))
    x = held_out[0][0][:8]
    with supernet.active(widths), again.active(widths), torch.no_grad():
        assert torch.equal(supernet.eval()(x), again(x))
    damaged = shutil.copytree(out, tmp_path / "damaged")
    (damaged / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SlimdeployError, match="damaged or not a slimdeploy file"):
        load_supernet(damaged)


def _train_cli(out, *extra):
    return [sys.executable, "-m", "slimdeploy", "supernet", "train", SMALL, "--input-shape", "1,3,16,16",
            "--data", "digits", "--epochs", "2", "--batch-size", "32", "--lr", "0.02", "--checkpoint-every", "5",
            "--out", str(out), "--quiet", *extra]


def test_a_killed_training_resumed_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    whole = subprocess.run(_train_cli(tmp_path / "whole"), capture_output=True, text=True, env=QUIET_ENV,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr
    killed = subprocess.Popen(_train_cli(tmp_path / "killed"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=QUIET_ENV)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["loop"]["step"] >= 15:
            break
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    state = torch.load(checkpoint, weights_only=True)["loop"]
    assert 15 <= state["step"] < 80 and not (tmp_path / "killed" / "supernet.json").exists()

    again = subprocess.run(_train_cli(tmp_path / "killed"), capture_output=True, text=True, env=QUIET_ENV)
    assert again.returncode == 2 and "pass --resume" in again.stderr  # never silently restarts over a run
    resumed = subprocess.run(_train_cli(tmp_path / "killed", "--resume"), capture_output=True, text=True,
                             env=QUIET_ENV, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "whole" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads(resumed.stdout)["checksums"] == json.loads(whole.stdout)["checksums"]


def test_two_torchrun_processes_end_with_identical_weights_and_a_falling_loss(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "slimdeploy", "supernet", "train", SMALL, "--input-shape", "1,3,16,16", "--data", "digits",
               "--epochs", "2", "--batch-size", "32", "--lr", "0.02", "--out", str(tmp_path / "ddp"), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, env=QUIET_ENV, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["world_size"] == 2 and summary["backend"] == "gloo" and len(summary["checksums"]) == 2
    assert summary["checksums"][0] == summary["checksums"][1]
    assert summary["loss"][1] < summary["loss"][0]
    manifest = json.loads((tmp_path / "ddp" / "supernet.json").read_text())
    assert manifest["training"]["world_size"] == 2


def test_training_into_a_foreign_folder_or_resuming_nothing_is_refused(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    for out, extra, message in ((tmp_path / "busy", [], "is not empty; choose another --out"),
                                (tmp_path / "empty", ["--resume"], "nothing to resume")):
        done = subprocess.run(_train_cli(out, *extra), capture_output=True, text=True, env=QUIET_ENV, timeout=300)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def _run(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "slimdeploy", *args], capture_output=True, text=True,
                          env=QUIET_ENV, timeout=timeout)


def test_search_writes_widths_and_a_front_per_budget_and_resumes_without_rescoring(trained, tmp_path):
    _, supernet_dir, _, _, _ = trained  # budgets above this 16-px model's floor (0.70x-0.77x, mostly overhead)
    args = ["search", SMALL, "--input-shape", "1,3,16,16", "--supernet", str(supernet_dir), "--data", "digits",
            "--method", "evolution", "--latency", "0.85x,0.95x", "--search-option", "population=8",
            "--search-option", "generations=2", "--samples", "8", "--threads", "1", "--out", str(tmp_path / "s"),
            "--quiet"]
    done = _run(*args)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    out = tmp_path / "s"
    assert {"widths-0.85x.json", "widths-0.95x.json", "front.json", "front.png", "search.json"} <= \
        {p.name for p in out.iterdir()}
    assert (out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    front = json.loads((out / "front.json").read_text())
    candidates = front["candidates"]
    assert len(candidates) == summary["evaluated"] > 10
    assert all({"latency", "macs", "params"} <= set(c["costs"]) and 0 <= c["score"] <= 1 for c in candidates)
    pareto = [c for c in candidates if c["pareto"]]
    for c in pareto:  # nothing evaluated beats a front point on both score and latency
        assert not any(o["costs"]["latency"] < c["costs"]["latency"] and o["score"] > c["score"] for o in candidates)
    for label, target in (("0.85x", 0.85), ("0.95x", 0.95)):
        assert front["chosen"][label]["costs"]["latency"] <= target
    assert front["chosen"]["0.95x"]["score"] >= front["chosen"]["0.85x"]["score"] - 0.02

    again = _run(*args, "--resume")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["chosen"] == summary["chosen"]
    refused = _run(*args)
    assert refused.returncode == 2 and "pass --resume" in refused.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here (tests/test_cuda.py trains there)")
def test_training_on_cuda_without_cuda_is_one_line_and_writes_nothing(tmp_path):
    done = subprocess.run(_train_cli(tmp_path / "gpu", "--device", "cuda"), capture_output=True, text=True,
                          env=QUIET_ENV, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "CUDA is not available here" in done.stderr and "use --device cpu" in done.stderr
    assert not (tmp_path / "gpu").exists()
