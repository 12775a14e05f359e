"""`slimdeploy supernet train`: train shared weights for every width of a model (resumable, torchrun-ready)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import SlimdeployError
from .common import add_model_args, load_model_and_input, say_for


def register(sub) -> None:
    from ..importance import IMPORTANCES

    p = sub.add_parser("supernet", help="train a supernet: shared weights for every width of a model")
    actions = p.add_subparsers(dest="supernet_command", required=True)
    t = actions.add_parser("train", help="train with the sandwich rule from the model's weights; checkpoints and "
                                         "resumes; runs under torchrun for several processes")
    add_model_args(t)
    t.add_argument("--data", required=True, help="digits, mnist5k, fashion-mnist or package.module:factory")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--lr", type=float, default=0.01)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--sandwich", type=int, default=4, help="networks per step: largest, smallest, n-2 random")
    t.add_argument("--teacher-weight", type=float, default=0.0,
                   help="share of the largest network's loss distilled from the original model (default 0)")
    t.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (default 50)")
    t.add_argument("--importance", default="l2", choices=sorted(n for n in IMPORTANCES if n != "taylor"),
                   help="how each group's channels are ranked (width k keeps the k first)")
    t.add_argument("--align", type=int, default=8)
    t.add_argument("--min-width", type=float, default=None, help="narrowest width, as a fraction (default 0.2)")
    t.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="train on the CPU (default) or on CUDA (under torchrun: one GPU per process, nccl)")
    t.add_argument("--out", required=True, help="directory for supernet.json, weights.pt, checkpoint.pt")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=run_train)


def run_train(args) -> int:
    from ..analysis import analyse
    from ..scoring import scoring_data
    from ..space import MIN_WIDTH_FRACTION
    from ..supernet import Supernet, SupernetTraining, prepare_dir, train_supernet
    from ..train import distributed as dist
    from ..train.evaluate import recalibrated_accuracy

    config = SupernetTraining(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                              sandwich=args.sandwich, teacher_weight=args.teacher_weight,
                              checkpoint_every=args.checkpoint_every)
    config.check()
    out = Path(args.out)
    device = dist.resolve_device(args.device)
    if device.type == "cuda":
        dist.deterministic_cuda()  # a resumed run must end with an uninterrupted run's weights
    distributed = dist.init_from_env(device)
    if dist.is_main():
        prepare_dir(out, args.resume)  # fail before the model and data are loaded
    dist.barrier()
    say = say_for(args) if dist.is_main() else (lambda text: None)
    model, example = load_model_and_input(args)
    analysis = analyse(model, example, args.ignore)
    min_fraction = args.min_width if args.min_width is not None else MIN_WIDTH_FRACTION
    if not 0 < min_fraction <= 1:
        raise SlimdeployError(f"--min-width must be in (0, 1], got {min_fraction}")
    supernet = Supernet(model, example, analysis, importance=args.importance, align=args.align,
                        min_fraction=min_fraction).to(device)
    data = scoring_data(args.data, tuple(example.shape), args.batch_size, args.seed)
    say(f"training a supernet of {args.model} ({len(analysis.space)} groups) on {data['info']['name']} for "
        f"{args.epochs} epoch(s){f' on {dist.world_size()} processes' if distributed else ''}"
        f"{' on ' + str(device) if device.type != 'cpu' else ''}")
    result = train_supernet(supernet, data["train_set"], config, out=out, resume=args.resume,
                            teacher=model.to(device) if args.teacher_weight > 0 else None, say=say)
    if dist.is_main():
        accuracy = {}
        for label, widths in (("largest", supernet.largest()), ("smallest", supernet.smallest())):
            with supernet.active(widths):
                accuracy[label] = recalibrated_accuracy(supernet, data["calibration"], data["val"], None,
                                                        restore=True)
        print(json.dumps({"out": str(out), "steps": result["steps"], "epochs": len(result["history"]),
                          "loss": [round(h["loss"], 4) for h in result["history"]],
                          "validation_accuracy": accuracy, "checksums": result["checksums"],
                          "world_size": result["world_size"], "backend": dist.backend(),
                          "seconds": result["seconds"]}, indent=2))
    return 0
