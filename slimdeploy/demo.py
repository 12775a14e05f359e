"""`slimdeploy demo`: the main job on an embedded default, offline, in about a minute on 2 cores.

Pretrained EfficientNet-Lite0 (real ImageNet weights) → channel groups → pruned to 0.75 width →
saved → exported to ONNX with the parity gate → original and pruned timed interleaved on ONNX
Runtime → top-1 on two real photos. No fine-tuning yet: the compress pipeline adds it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .analysis import analyse
from .checkpoint import make_temp_dir, replace_dir, save
from .export import default_inputs, export_onnx, verify_onnx
from .inspection import count_macs_params
from .latency.measure import compare
from .prune import prune
from .zoo import build

SPEC = "slimdeploy.pretrained:efficientnet_lite0"
INPUT_SHAPE = (1, 3, 224, 224)
MULTIPLIER = 0.75


def run_demo(out: str | Path = "demo-out", threads: int | None = None, say=print) -> dict:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.randn(*INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    say(f"1/5 loading {SPEC} (pretrained ImageNet weights)")
    model = build(SPEC).eval()
    say("2/5 finding channel groups (torch-pruning dependency graph)")
    analysis = analyse(model, x)
    widths = analysis.space.uniform(MULTIPLIER)
    say(f"    {len(analysis.space)} groups; pruning every group to {MULTIPLIER:g} of its width (multiples of 8)")
    pruned = prune(model, widths, x, analysis=analysis).eval()
    tmp = make_temp_dir(out)
    try:
        say("3/5 saving and exporting both models to ONNX with the parity gate")
        save(pruned, tmp / "model")
        export_onnx(model, x, tmp / "original.onnx")
        export_onnx(pruned, x, tmp / "model.onnx")
        parity = verify_onnx(pruned, tmp / "model.onnx", x)
        parity.raise_if_failed()
        say("4/5 timing original and pruned interleaved on ONNX Runtime CPU")
        timing = compare([tmp / "original.onnx", tmp / "model.onnx"], threads=threads)
        say("5/5 top-1 on two real photos (scikit-learn's china.jpg and flower.jpg)")
        photos = torch.cat(default_inputs(x)[:2])
        with torch.no_grad():
            top_before = model(photos).argmax(1).tolist()
            top_after = pruned(photos).argmax(1).tolist()
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    macs0, params0 = count_macs_params(model, x)
    macs1, params1 = count_macs_params(pruned, x)
    before, after = timing.measurements
    result = {
        "latency_ms": {"original": before.median_ms, "pruned": after.median_ms, "ratio": timing.ratios[1],
                       "threads": before.threads, "stable": timing.stable},
        "macs": {"original": macs0, "pruned": macs1}, "params": {"original": params0, "pruned": params1},
        "top1_photos": {"original": top_before, "pruned": top_after},
        "parity_max_abs_error": parity.max_abs_error, "out": str(out),
    }
    say("")
    say(f"{'':22}{'original':>12}{'pruned':>12}")
    say(f"{'latency (ms, median)':22}{before.median_ms:>12.2f}{after.median_ms:>12.2f}   "
        f"ratio {timing.ratios[1]:.2f} (interleaved, {before.threads} threads, ONNX Runtime CPU)")
    say(f"{'MACs (M)':22}{macs0 / 1e6:>12.1f}{macs1 / 1e6:>12.1f}")
    say(f"{'params (M)':22}{params0 / 1e6:>12.3f}{params1 / 1e6:>12.3f}")
    say(f"{'top-1 class of photos':22}{str(top_before):>12}{str(top_after):>12}   "
        f"(ImageNet 442 = bell cote, 698 = palace, 985 = daisy; not fine-tuned)")
    say(f"ONNX parity: max abs error {parity.max_abs_error:.2e}, top-1 agreement {parity.top1_agreement:.0%}")
    say(f"files: {out}/model (slimdeploy.load), {out}/model.onnx, {out}/original.onnx")
    return result
