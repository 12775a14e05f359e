"""Ranking quality of fixed-prefix vs locally free sharing (CafeNet's claim): Kendall τ to fine-tuned accuracy.

    python benchmarks/sharing_ranking.py                       # 3 seeds, 8 widths each; writes RESULTS.md
    python benchmarks/sharing_ranking.py --seeds 0 --quick     # a smoke run

Per seed, two CafeNet supernets of the same ResNet-20 (shared_bench.py) are trained the same
epochs with the same min-min step and latency bins, one with `zone=0` (fixed prefix sharing: a
width keeps its first channels) and one with `zone=1` (locally free). The same random width
vectors, drawn from the bins with a predicted latency between 0.4× and 0.75×, are scored on each
supernet (held-out accuracy at the best placement, after BatchNorm recalibration) and, as
ground truth, pruned from the original and fine-tuned stand-alone (distilled from the
original, the same epochs for each) and evaluated on the validation subset. Kendall τ between
the two is the ranking quality.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from shared_bench import Bench, mean_std, say  # noqa: E402


def draw_widths(bench: Bench, bins: dict, count: int, seed: int, low: float = 0.4, high: float = 0.75) -> list:
    from slimdeploy.space import Widths

    rng, out = random.Random(seed), []
    for _ in range(5000):
        w = Widths(bench.analysis.space.fingerprint, {g: rng.choice(ws) for g, ws in bins.items()})
        if low <= bench.latency(w) <= high and w not in out:
            out.append(w)
        if len(out) == count:
            break
    return out


def run_seed(bench: Bench, seed: int, count: int, epochs: int, ft_epochs: int) -> dict:
    from scipy.stats import kendalltau
    from slimdeploy.prune import prune
    from slimdeploy.train import accuracy, finetune

    supernets = {zone: bench.provide("cafenet", {"zone": zone, "placements": 2}, epochs, seed)
                 for zone in (0, 1)}
    widths = draw_widths(bench, supernets[1][0].bins, count, seed)
    truth = []
    for w in widths:
        pruned = prune(bench.model, w, bench.x, analysis=bench.analysis)
        finetune(pruned, bench.train_loader, ft_epochs, lr=0.01, teacher=bench.model, seed=seed)
        truth.append(accuracy(pruned, bench.val))
    say(f"seed {seed}: stand-alone accuracies {[round(t, 4) for t in truth]}")
    row = {"seed": seed, "widths": [dict(w.widths) for w in widths], "truth": truth, "zones": {}}
    for zone, (shared, seconds) in supernets.items():
        score = shared.scorer(bench.calibration, bench.held_out)
        scores = [score(w) for w in widths]
        tau = float(kendalltau(scores, truth).statistic)
        row["zones"][str(zone)] = {"scores": scores, "tau": tau, "train_seconds": round(seconds, 1)}
        say(f"seed {seed} zone {zone}: Kendall τ {tau:.3f}")
    return row


def render(rows: list[dict]) -> str:
    lines = ["| sharing | Kendall τ (mean ± std) | per seed | supernet training (s) |", "|---|---:|---|---:|"]
    for zone, label in (("0", "fixed prefix (zone 0)"), ("1", "locally free (zone 1, CafeNet)")):
        taus = [r["zones"][zone]["tau"] for r in rows]
        lines.append(f"| {label} | {mean_std(taus)} | {', '.join(f'{t:.3f}' for t in taus)} | "
                     f"{mean_std([r['zones'][zone]['train_seconds'] for r in rows])} |")
    n = sorted({len(r["widths"]) for r in rows})
    spread = [max(r["truth"]) - min(r["truth"]) for r in rows]
    lines += ["", f"{n} width vectors per seed (seeds {[r['seed'] for r in rows]}); spread of their stand-alone "
                  f"accuracies per seed: {', '.join(f'{s:.4f}' for s in spread)}."]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--widths", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--n-fit", type=int, default=512, help="training images the methods train and fine-tune on")
    p.add_argument("--n-held", type=int, default=300, help="training images held out to score candidates on")
    p.add_argument("--n-val", type=int, default=1000, help="test images the delivered accuracy is measured on")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--work", default="/tmp/bench-fronts")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--from-json")
    p.add_argument("--command", help="the command line to record in RESULTS.md (when rendering a saved run)")
    p.add_argument("--reading", help="what the table says, added under it (@FILE reads a file)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    path = Path(args.from_json) if args.from_json else Path(args.work) / ("ranking-quick.json" if args.quick
                                                                          else "ranking.json")
    rows = json.loads(path.read_text()) if path.exists() else []
    if not args.from_json:
        bench = Bench(Path(args.work), n_fit=args.n_fit, n_held=args.n_held, n_val=args.n_val, batch=args.batch)
        for seed in [int(s) for s in args.seeds.split(",")]:
            if any(r["seed"] == seed for r in rows):
                continue
            rows.append(run_seed(bench, seed, args.widths, args.epochs, args.finetune_epochs))
            path.write_text(json.dumps(rows, indent=1))
    from results import reading_text

    text = render(rows) + ("\n\n" + reading_text(args.reading) if args.reading else "")
    print(text)
    if not args.quick:
        from results import write_section

        write_section("sharing-ranking", text, command=args.command or "python benchmarks/sharing_ranking.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
