"""CUDA paths of shared-weight training: a supernet trained on a GPU, extracted there, resumed; torchrun's
backend follows the device. Skipped without CUDA (the CPU paths are tested in test_supernet.py)."""
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

from slimdeploy.supernet import Supernet

HAS_CUDA = torch.cuda.is_available()
SMALL = "slimdeploy.models:cifar_resnet8"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason="CUDA not available")


def _train(out, *extra, nproc=None):
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] \
        if nproc else [sys.executable]
    return head + ["-m", "slimdeploy", "supernet", "train", SMALL, "--input-shape", "1,3,16,16", "--data", "digits",
                   "--epochs", "2", "--batch-size", "32", "--lr", "0.02", "--checkpoint-every", "5", "--out", str(out),
                   "--quiet", *extra]


def test_extraction_on_cuda_computes_what_the_supernet_computes():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 32, 32, device="cuda")
    supernet = Supernet(model, x[:1].cpu()).cuda()
    widths = supernet.random_widths(random.Random(0))
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # masked and pruned sum alike
    try:
        with supernet.active(widths):
            supernet.recalibrate([torch.randn(8, 3, 32, 32, device="cuda") for _ in range(2)])
            pruned = supernet.extract(widths)
            with torch.no_grad():
                expected, got = supernet.eval()(x), pruned(x)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous
    assert next(pruned.parameters()).is_cuda
    assert (expected - got).abs().max().item() <= 1e-4


def test_supernet_trains_on_cuda_and_a_killed_run_resumes_to_the_uninterrupted_weights(tmp_path):
    whole = subprocess.run(_train(tmp_path / "whole", "--device", "cuda"), capture_output=True, text=True, env=ENV,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr
    summary = json.loads(whole.stdout)
    assert summary["loss"][1] < summary["loss"][0]
    weights = torch.load(tmp_path / "whole" / "weights.pt", weights_only=True, map_location="cpu")
    twice = subprocess.run(_train(tmp_path / "twice", "--device", "cuda"), capture_output=True, text=True, env=ENV,
                           timeout=600)
    assert twice.returncode == 0, twice.stderr
    again = torch.load(tmp_path / "twice" / "weights.pt", weights_only=True, map_location="cpu")
    drift = max((weights[k].float() - again[k].float()).abs().max().item() for k in weights)
    assert drift == 0.0, f"two uninterrupted runs of one seed differ by up to {drift}: CUDA is not deterministic"

    killed = subprocess.Popen(_train(tmp_path / "killed", "--device", "cuda"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=ENV)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and killed.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True, map_location="cpu")["loop"]["step"] >= 15:
            break
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")["loop"]
    assert state["step"] >= 15 and not (tmp_path / "killed" / "supernet.json").exists()  # killed mid-run
    resumed = subprocess.run(_train(tmp_path / "killed", "--device", "cuda", "--resume"), capture_output=True,
                             text=True, env=ENV, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    b = torch.load(tmp_path / "killed" / "weights.pt", weights_only=True, map_location="cpu")
    worst = max((weights[k].float() - b[k].float()).abs().max().item() for k in weights)
    assert worst == 0.0, f"resumed weights differ from the uninterrupted run's by up to {worst}"


def test_torchrun_on_a_gpu_machine_trains_a_cpu_supernet_with_gloo(tmp_path):
    done = subprocess.run(_train(tmp_path / "cpu", nproc=2), capture_output=True, text=True, env=ENV, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert summary["checksums"][0] == summary["checksums"][1]


def test_more_torchrun_processes_than_gpus_is_one_clear_line(tmp_path):
    nproc = torch.cuda.device_count() + 1
    done = subprocess.run(_train(tmp_path / "many", "--device", "cuda", nproc=nproc), capture_output=True, text=True,
                          env=ENV, timeout=600)
    assert done.returncode != 0
    assert f"more processes on this machine than it has GPUs ({torch.cuda.device_count()})" in done.stderr
