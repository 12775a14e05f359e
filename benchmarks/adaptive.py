"""Adaptive width (issue 11): the method's claims at small scale, and slimdeploy's question.

    python benchmarks/adaptive.py                                   # every part, seeds 0,1,2
    python benchmarks/adaptive.py --parts budgets --seeds 0,1,2     # one part
    python benchmarks/adaptive.py --from-json /tmp/adaptive.json    # re-render RESULTS.md only

Needs Fashion-MNIST (Debian package `dataset-fashion-mnist`); refuses to run without it.

* **difficulty**: the same CIFAR-style ResNet-8 (16-32-64 channels, 16x16 input) trained from scratch
  with adaptive width, starting at 25% of its width, on digits and on Fashion-MNIST subsampled to
  digits' training size (same N, same input, same epochs): the learned widths.
* **grid**: on Fashion-MNIST, the adaptive network's accuracy against fixed-width ResNet-8s at
  0.25/0.5/0.75/1.0 of its ceiling width, trained from scratch for the same epochs (SGD, weight decay).
* **truncation**: the adaptive network of *difficulty* (Fashion) truncated along its quantile path,
  against the full fixed-width network of *grid* truncated to the same widths (its channels kept by L2
  norm); accuracy on the validation split with and without BatchNorm recalibration (3 batches), against
  the share of MACs kept.
* **budgets**: a CIFAR-style ResNet-20 trained on 3000 Fashion-MNIST images (28x28, 3 epochs) is
  compressed to 0.35x/0.5x/0.7x of its ONNX Runtime latency (1 thread, measured interleaved) with
  `compress(method=...)`. Same training after the original for every method: adaptive = 2 epochs of
  adaptive-width training (distillation from the original) + 1 epoch of fine-tuning per budget;
  uniform = 3 epochs of fine-tuning per budget (L2 pruning); slim (when listed) = 2 supernet epochs
  + 1 fine-tuning epoch. Accuracy on 2000 images of the official test split.

Rows are appended to the JSON file as they complete; RESULTS.md's `adaptive` section is written at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTION = "adaptive"
SMALL_SHAPE = (1, 3, 16, 16)
BUDGET_SHAPE = (1, 3, 28, 28)
EPOCHS = 10          # parts difficulty / grid
GRID = (0.25, 0.5, 0.75, 1.0)
BUDGETS = ("0.35x", "0.5x", "0.7x")  # the tradeoff benchmark's budgets (0.3x is below what uniform reaches)
PRETRAIN_EPOCHS, SHARED_EPOCHS, FINETUNE_EPOCHS = 3, 2, 1
N_BUDGET_TRAIN, N_VAL = 3000, 2000


# -- data (also the `adaptive:fashion_budget` factory compress loads) ------------------------------
def _subset(dataset, n: int, seed: int):
    import torch
    from torch.utils.data import Subset

    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, sorted(order[:n]))


def small_task(name: str, seed: int = 0):
    """(train, val) at 16x16: digits as it is, Fashion-MNIST with digits' training size (val: 2000 test images)."""
    from slimdeploy.data import load_dataset

    digits_train, digits_val, _ = load_dataset("digits", input_shape=SMALL_SHAPE, seed=seed)
    if name == "digits":
        return digits_train, digits_val
    train, val, _ = load_dataset("fashion-mnist", input_shape=SMALL_SHAPE)
    return _subset(train, len(digits_train), seed), _subset(val, N_VAL, 0)


def fashion_budget(input_shape=None, seed=0):
    """Fashion-MNIST: 3000 training images (fixed), 2000 of the official test images."""
    from slimdeploy.data import load_dataset

    train, val, info = load_dataset("fashion-mnist", input_shape=input_shape or BUDGET_SHAPE)
    return _subset(train, N_BUDGET_TRAIN, 0), _subset(val, N_VAL, 0), {**info, "name": "fashion-mnist-3k",
                                                                        "n_train": N_BUDGET_TRAIN, "n_val": N_VAL}


# -- parts 1-3: the method's claims ------------------------------------------------------------
def resnet8(width: int = 16):
    from slimdeploy.models import CifarResNet

    return CifarResNet(1, width)


SETTINGS = {"prior off": {}, "rate prior": {"rate_prior_mean": 0.15, "rate_prior_std": 0.05}}


def train_adaptive_from_scratch(task: str, seed: int, setting: str, say):
    import torch

    from slimdeploy.adaptive import AdaptiveWidth
    from slimdeploy.adaptive.training import AdaptiveTraining, train_adaptive

    train, _ = small_task(task, seed)
    torch.manual_seed(seed)
    net = AdaptiveWidth(resnet8(), torch.randn(*SMALL_SHAPE), init_width=0.25, min_fraction=0.1)
    config = AdaptiveTraining(epochs=EPOCHS, lr=0.05, seed=seed, init_width=0.25, teacher_weight=0.0,
                              **SETTINGS[setting])
    started = time.perf_counter()
    train_adaptive(net, train, config, say=say)
    return net, time.perf_counter() - started


def train_fixed(task: str, multiplier: float, seed: int):
    import torch

    from slimdeploy.data import make_loader
    from slimdeploy.train import train_classifier

    train, _ = small_task(task, seed)
    torch.manual_seed(seed)
    model = resnet8(round(16 * multiplier))
    train_classifier(model, make_loader(train, 64, shuffle=True, seed=seed), epochs=EPOCHS, lr=0.05, seed=seed)
    return model.eval()


def val_batches(task: str, seed: int):
    from slimdeploy.data import make_loader

    _, val = small_task(task, seed)
    return list(make_loader(val, 500))


def calibration_batches(task: str, seed: int):
    from slimdeploy.data import make_loader

    train, _ = small_task(task, seed)
    return [b for _, b in zip(range(3), make_loader(train, 64, shuffle=True, seed=seed + 1))]


def part_method(seeds, rows, save, say):
    """difficulty, grid and truncation share their trained networks."""
    import torch

    from slimdeploy.channels import ChannelMap
    from slimdeploy.costs import CostModel
    from slimdeploy.supernet import Supernet
    from slimdeploy.train import accuracy, recalibrated_accuracy

    for seed in seeds:
        nets = {}
        for setting in SETTINGS:
            for task in ("digits", "fashion"):
                net, seconds = train_adaptive_from_scratch(task, seed, setting, say)
                nets[setting, task] = net
                row = {"part": "difficulty", "setting": setting, "task": task, "seed": seed,
                       "width_fraction": net.width_fraction(), "widths": net.learned_widths(),
                       "accuracy": accuracy(net, val_batches(task, seed)), "seconds": round(seconds, 1)}
                save(rows, row)
                say(f"difficulty {setting} {task} seed {seed}: width {row['width_fraction']:.3f}, accuracy "
                    f"{row['accuracy']:.4f}")
        fixed = {}
        for m in GRID:
            model = train_fixed("fashion", m, seed)
            fixed[m] = model
            save(rows, {"part": "grid", "task": "fashion", "seed": seed, "multiplier": m,
                        "accuracy": accuracy(model, val_batches("fashion", seed))})
            say(f"grid fashion x{m} seed {seed}: {rows[-1]['accuracy']:.4f}")
        for setting in SETTINGS:
            net = nets[setting, "fashion"]
            save(rows, {"part": "grid", "task": "fashion", "seed": seed, "multiplier": f"adaptive ({setting})",
                        "width_fraction": net.width_fraction(), "accuracy": accuracy(net, val_batches("fashion", seed))})
        net, val = nets["prior off", "fashion"], val_batches("fashion", seed)
        calib = calibration_batches("fashion", seed)
        baseline = Supernet(fixed[1.0], torch.randn(*SMALL_SHAPE), min_fraction=0.1)
        costs = CostModel.build(net.model, torch.randn(*SMALL_SHAPE), ChannelMap.build(net.model, net.analysis))
        full_macs = costs.counts(net.space.full())[0]
        for t in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2):
            quantile = 1 - (1 - net.quantile) ** t
            widths = net.learned_widths() if t == 1 else net.truncated(quantile)
            row = {"part": "truncation", "seed": seed, "t": t, "macs": costs.counts(widths)[0] / full_macs,
                   "channels": sum(widths.values()) / sum(g.width for g in net.space)}
            own = {g.name: max(1, round(t * g.width)) for g in net.space}  # the fixed net cut from its own width
            row["fixed_own_macs"] = costs.counts(own)[0] / full_macs
            for label, model, kept in (("adaptive", net, widths), ("fixed", baseline, widths),
                                       ("fixed_own", baseline, own)):
                with model.active(kept):
                    row[f"{label}_plain"] = accuracy(model, val)
                    row[f"{label}_recalibrated"] = recalibrated_accuracy(model, calib, val, None, restore=True)
            save(rows, row)
            say(f"truncation seed {seed} t={t}: MACs {row['macs']:.3f}, adaptive {row['adaptive_recalibrated']:.4f}"
                f" fixed {row['fixed_recalibrated']:.4f}")


# -- part 4: budgets -----------------------------------------------------------------------------
def pretrained(out: Path, say):
    """ResNet-20 trained on the 3000 images (seed 0), saved once and reused."""
    import slimdeploy
    from slimdeploy.data import make_loader
    from slimdeploy.train import accuracy, train_classifier
    from slimdeploy.zoo import build

    directory = out / "resnet20-fashion3k"
    if (directory / "slimdeploy.json").exists():
        return directory
    model = build("slimdeploy.models:cifar_resnet20")
    train, val, _ = fashion_budget()
    say(f"pretraining ResNet-20 for {PRETRAIN_EPOCHS} epochs on {len(train)} images")
    train_classifier(model, make_loader(train, 64, shuffle=True), epochs=PRETRAIN_EPOCHS, lr=0.05)
    say(f"pretrained accuracy {accuracy(model.eval(), make_loader(val, 500)):.4f}")
    slimdeploy.save(model.eval(), directory)
    return directory


def part_budgets(seeds, methods, rows, save, say, out: Path):
    from slimdeploy.pipeline import compress

    model_dir = pretrained(out, say)
    os.environ["SLIMDEPLOY_DB"] = str(out / "latency.sqlite")  # one set of latency measurements for every run
    for seed in seeds:
        for method in methods:
            settings = {"uniform": {"finetune_epochs": SHARED_EPOCHS + FINETUNE_EPOCHS},
                        "adaptive": {"finetune_epochs": FINETUNE_EPOCHS, "supernet_epochs": SHARED_EPOCHS},
                        "slim": {"finetune_epochs": FINETUNE_EPOCHS, "supernet_epochs": SHARED_EPOCHS}}[method]
            started = time.perf_counter()
            summary = compress(str(model_dir), out / f"{method}-{seed}", latency=",".join(BUDGETS),
                               input_shape=BUDGET_SHAPE, data="adaptive:fashion_budget", method=method, seed=seed,
                               threads=1, say=say, **settings)
            seconds = time.perf_counter() - started
            for b in summary["budgets"]:
                save(rows, {"part": "budgets", "method": method, "seed": seed, "budget": b["budget"],
                            "latency_ratio": b["latency_ratio"], "predicted": b["predicted_ratio"],
                            "accuracy": b["accuracy"], "macs": b["macs"] / summary["original"]["macs"],
                            "original_accuracy": summary["original"]["accuracy"], "seconds": round(seconds, 1)})
                say(f"budgets {method} seed {seed} {b['budget']}: {b['latency_ratio']:.3f}x, accuracy {b['accuracy']:.4f}")


# -- the report ------------------------------------------------------------------------------------
def _ms(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {spread:.3f}"


def _pct(values) -> str:
    values = [100 * v for v in values if v is not None]
    if not values:
        return "–"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {spread:.2f}"


def render(rows: list[dict]) -> str:
    out = []
    diff = [r for r in rows if r["part"] == "difficulty"]
    if diff:
        seeds = sorted({r["seed"] for r in diff})
        out += ["### Learned width against task difficulty (ResNet-8 from scratch, same N, same input, "
                f"{EPOCHS} epochs, start at 25% width; {len(seeds)} seeds)", "",
                "Rate prior off: the method's CIFAR setting. Rate prior: a Gaussian on every λ, μ_λ = 0.15 (a width of "
                "about 17 channels), σ_λ = 0.05, divided by N like the rest of the prior.", "",
                "| setting | task | learned width (share of channels) | per group (mean channels) | accuracy (%) |",
                "|---|---|---:|---|---:|"]
        for setting in SETTINGS:
            for task in ("digits", "fashion"):
                rs = [r for r in diff if r["task"] == task and r.get("setting", "prior off") == setting]
                if not rs:
                    continue
                per_group = ", ".join(f"{statistics.fmean(r['widths'][g] for r in rs):.0f}" for g in rs[0]["widths"])
                out.append(f"| {setting} | {task} | {_ms([r['width_fraction'] for r in rs])} | {per_group} "
                           f"| {_pct([r['accuracy'] for r in rs])} |")
        for setting in SETTINGS:
            pairs = [(_one(diff, setting, "fashion", s), _one(diff, setting, "digits", s)) for s in seeds]
            pairs = [p for p in pairs if None not in p]
            if pairs:
                out.append(f"\n{setting}: Fashion-MNIST learned the wider network in "
                           f"{sum(f > d for f, d in pairs)} of {len(pairs)} seeds.")
        out += ["", "Groups in order: " + ", ".join(diff[0]["widths"]) + ".", ""]
    grid = [r for r in rows if r["part"] == "grid"]
    if grid:
        out += ["### Adaptive against fixed widths (Fashion-MNIST subset, same epochs)", "",
                "| network | width (share of the ceiling's channels) | accuracy (%) |", "|---|---:|---:|"]
        adaptive_rows = [f"adaptive ({s})" for s in SETTINGS]
        for m in (*GRID, *adaptive_rows):
            rs = [r for r in grid if r["multiplier"] == m]
            if rs:
                width = _ms([r["width_fraction"] for r in rs]) if m in adaptive_rows else f"{m:.2f}"
                out.append(f"| {m if m in adaptive_rows else f'fixed x{m}'} | {width} "
                           f"| {_pct([r['accuracy'] for r in rs])} |")
        out.append("")
        for m in adaptive_rows:
            gaps = []
            for s in sorted({r["seed"] for r in grid}):
                fixed = [r["accuracy"] for r in grid if r["seed"] == s and r["multiplier"] in GRID]
                adaptive = [r["accuracy"] for r in grid if r["seed"] == s and r["multiplier"] == m]
                if fixed and adaptive:
                    gaps.append(adaptive[0] - max(fixed))
            if gaps:
                out.append(f"{m} minus the best fixed width of the same seed: {_pct(gaps)} points.  ")
        out.append("")
    trunc = [r for r in rows if r["part"] == "truncation"]
    if trunc:
        out += ["### Truncation: the adaptive network against the full fixed-width network cut the same way",
                "", "Fashion-MNIST subset; accuracy (%) on the validation images, mean ± std over seeds. The adaptive "
                "network is cut along its quantile path (t = share of its learned widths); the fixed x1.0 network "
                "keeps its channels of largest L2 norm, cut either to the adaptive network's widths (same MACs) or "
                "to t of its own full widths. MACs as a share of the full (ceiling) network; \"recal.\" = BatchNorm "
                "statistics re-estimated on 3 training batches.", "",
                "| t | adaptive: MACs | adaptive | adaptive recal. | fixed, same widths | fixed, same widths recal. "
                "| fixed t×full: MACs | fixed t×full | fixed t×full recal. |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for t in sorted({r["t"] for r in trunc}, reverse=True):
            rs = [r for r in trunc if r["t"] == t]
            out.append(f"| {t:.1f} | {_ms([r['macs'] for r in rs])} | {_pct([r['adaptive_plain'] for r in rs])} "
                       f"| {_pct([r['adaptive_recalibrated'] for r in rs])} | {_pct([r['fixed_plain'] for r in rs])} "
                       f"| {_pct([r['fixed_recalibrated'] for r in rs])} | {_ms([r['fixed_own_macs'] for r in rs])} "
                       f"| {_pct([r['fixed_own_plain'] for r in rs])} | {_pct([r['fixed_own_recalibrated'] for r in rs])} |")
        out += ["", "![truncation curves](adaptive-truncation.png)", ""]
    budgets = [r for r in rows if r["part"] == "budgets"]
    if budgets:
        methods = [m for m in ("uniform", "adaptive", "slim") if any(r["method"] == m for r in budgets)]
        original = statistics.fmean(r["original_accuracy"] for r in budgets)
        out += [f"### Measured-latency budgets: CIFAR-style ResNet-20 on Fashion-MNIST ({N_BUDGET_TRAIN} training "
                "images)", "",
                f"Original accuracy {100 * original:.2f}% on 2000 test images. Accuracy (%) of the delivered model and "
                "its latency measured on ONNX Runtime (1 thread, interleaved ratio to the original), mean ± std over "
                f"{len({r['seed'] for r in budgets})} seeds; every method has {SHARED_EPOCHS + FINETUNE_EPOCHS} epochs "
                "of training after the original.", "",
                "| budget | " + " | ".join(f"{m} accuracy | {m} latency" for m in methods) + " |",
                "|---|" + "---:|---:|" * len(methods)]
        for b in BUDGETS:
            cells = []
            for m in methods:
                rs = [r for r in budgets if r["method"] == m and r["budget"] == b]
                cells += [_pct([r["accuracy"] for r in rs]), _ms([r["latency_ratio"] for r in rs])]
            out.append(f"| {b} | " + " | ".join(cells) + " |")
        seconds = {m: statistics.fmean(r["seconds"] for r in budgets if r["method"] == m) for m in methods}
        out += ["", "Wall time of one compress run (three budgets) on this shared machine: "
                + ", ".join(f"{m} {s / 60:.1f} min" for m, s in seconds.items()) + ".", ""]
    return "\n".join(out)


def _one(rows, setting, task, seed):
    return next((r["width_fraction"] for r in rows if r["task"] == task and r["seed"] == seed
                 and r.get("setting", "prior off") == setting), None)


def plot(rows: list[dict], path: Path) -> None:
    sys.path.insert(0, str(HERE.parent))
    from slimdeploy.plots import curve_plot

    trunc = [r for r in rows if r["part"] == "truncation"]
    if not trunc:
        return
    ts = sorted({r["t"] for r in trunc})
    curves = {}
    for key, macs, label in (("adaptive_plain", "macs", "adaptive, truncated"),
                             ("adaptive_recalibrated", "macs", "adaptive, truncated, BN recal."),
                             ("fixed_own_plain", "fixed_own_macs", "fixed x1.0, cut to t x full"),
                             ("fixed_own_recalibrated", "fixed_own_macs", "fixed x1.0, cut to t x full, BN recal."),
                             ("fixed_recalibrated", "macs", "fixed x1.0, cut to the adaptive widths, BN recal.")):
        curves[label] = [(statistics.fmean(r[macs] for r in trunc if r["t"] == t),
                          statistics.fmean(r[key] for r in trunc if r["t"] == t)) for t in ts]
    curve_plot(path, curves, title="ResNet-8 on Fashion-MNIST: truncating the trained network",
               x_label="share of MACs kept", y_label="validation accuracy (mean over seeds)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="method,budgets", help="method (difficulty, grid, truncation), budgets")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="uniform,adaptive", help="methods of the budgets part")
    parser.add_argument("--out", default="/tmp/slimdeploy-adaptive-bench")
    parser.add_argument("--json", default=None, help="rows file (default OUT/rows.json); appended as rows complete")
    parser.add_argument("--from-json", help="render RESULTS.md from these rows files (comma-separated), run nothing")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave RESULTS.md alone")
    parser.add_argument("--command", help="the command line to record in RESULTS.md (with --from-json: the runs "
                                          "that made the rows)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one epoch everywhere, no RESULTS.md")
    parser.add_argument("--reading", help="what the tables say, added at the end of the section (@FILE reads a file)")
    args = parser.parse_args()
    if args.quick:
        global EPOCHS, PRETRAIN_EPOCHS, SHARED_EPOCHS, FINETUNE_EPOCHS, N_BUDGET_TRAIN
        EPOCHS, PRETRAIN_EPOCHS, SHARED_EPOCHS, FINETUNE_EPOCHS, N_BUDGET_TRAIN = 1, 1, 1, 1, 1000
        args.no_write = True
    sys.path.insert(0, str(HERE))
    from results import reading_text, write_section

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        rows = [r for path in args.from_json.split(",") for r in json.loads(Path(path).read_text())]
    else:
        rows_path = Path(args.json or out / "rows.json")
        rows = json.loads(rows_path.read_text()) if rows_path.exists() else []

    def say(text):
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def save(rows, row):
        rows.append(row)
        rows_path.write_text(json.dumps(rows, indent=1))

    if not args.from_json:
        from slimdeploy.data import FASHION_MNIST_DIR

        if not Path(os.environ.get("SLIMDEPLOY_FASHION_MNIST_DIR", FASHION_MNIST_DIR)).is_dir():
            print("this benchmark needs Fashion-MNIST: apt-get install dataset-fashion-mnist", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(1)
        seeds = [int(s) for s in args.seeds.split(",")]
        parts = args.parts.split(",")
        rows = [r for r in rows if not (r["part"] in _parts(parts) and r.get("seed") in seeds)]
        if "method" in parts:
            part_method(seeds, rows, save, say)
        if "budgets" in parts:
            part_budgets(seeds, args.methods.split(","), rows, save, say, out)
    markdown = render(rows)
    if reading_text(args.reading):
        markdown += "\n\n" + reading_text(args.reading)
    print(markdown)
    if not args.no_write:
        plot(rows, HERE / "adaptive-truncation.png")
        command = args.command or " ".join(["python benchmarks/adaptive.py", *sys.argv[1:]])
        write_section(SECTION, markdown, command=command)
    return 0


def _parts(parts: list[str]) -> set[str]:
    return ({"difficulty", "grid", "truncation"} if "method" in parts else set()) | (
        {"budgets"} if "budgets" in parts else set())


if __name__ == "__main__":
    sys.exit(main())
