"""Set-up shared by the shared-weight benchmarks (fronts.py, sharing_ranking.py): one trained original,
one data split, one latency model fitted on ONNX Runtime (1 thread), and one method run.

Tracks: the original is a CIFAR-style ResNet-20 (3×28×28 inputs) trained from scratch on 3,000
Fashion-MNIST training images (4 epochs), or the ImageNet-pretrained EfficientNet-Lite0 at 64 px
fine-tuned on the same images (2 epochs); the methods train and fine-tune on the first `n_fit` of
them, score candidates on `n_held` other training images and report accuracy on the first `n_val`
test images. The original is cached under the work directory with its latency database, so
several benchmarks (and re-runs) share them. Needs the Debian package `dataset-fashion-mnist`.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Subset

TRACKS = {
    "resnet20": {"model": "slimdeploy.models:cifar_resnet20", "shape": (1, 3, 28, 28), "normalize": "dataset",
                 "pre_epochs": 4, "pre_lr": 0.05, "title": "ResNet-20"},
    "lite0": {"model": "slimdeploy.pretrained:efficientnet_lite0_10", "shape": (1, 3, 64, 64), "normalize": "imagenet",
              "pre_epochs": 2, "pre_lr": 0.02, "title": "EfficientNet-Lite0 (ImageNet-pretrained, 64 px)"},
}


def say(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, flush=True)


class Bench:
    """The original, the data, the latency model, the costs: what every method run shares."""

    def __init__(self, work: Path, n_fit: int = 1000, n_held: int = 500, n_train: int = 3000, n_val: int = 2000,
                 batch: int = 64, track: str = "resnet20"):
        from slimdeploy.analysis import analyse
        from slimdeploy.channels import ChannelMap
        from slimdeploy.costs import CostModel
        from slimdeploy.data import load_dataset, make_loader
        from slimdeploy.latency.oracle import MeasuredLatency
        from slimdeploy.options import LatencyOptions, SearchOptions
        from slimdeploy.problem import latency_source, resolve_runtime, search_costs
        from slimdeploy.train import accuracy, train_classifier
        from slimdeploy.zoo import build

        if not Path("/usr/share/datasets/fashion-mnist").is_dir():
            raise SystemExit("Fashion-MNIST is missing: apt-get install -y dataset-fashion-mnist")
        spec = TRACKS[track]
        work = work if track == "resnet20" else work / track  # the ResNet-20 track keeps its old place
        work.mkdir(parents=True, exist_ok=True)
        self.work, self.batch, self.shape = work, batch, spec["shape"]
        train, val, _ = load_dataset("fashion-mnist", input_shape=self.shape, seed=0, normalize=spec["normalize"])
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
        pre_train = Subset(train, order[:n_train])           # what the original was trained on
        self.train_set = Subset(train, order[:min(n_fit, n_train)])  # what the methods train and fine-tune on
        held = Subset(train, order[n_train:n_train + n_held])
        self.val = list(make_loader(Subset(val, list(range(n_val))), 256))
        self.train_loader = make_loader(self.train_set, batch, shuffle=True, seed=0)
        pre_loader = make_loader(pre_train, 64, shuffle=True, seed=0)
        self.calibration = [b for _, b in zip(range(3), make_loader(self.train_set, batch, shuffle=True, seed=1))]
        self.held_out = list(make_loader(held, 2 * batch))
        self.data = {"train": self.train_loader, "train_set": self.train_set, "val": self.val,
                     "info": {"name": "fashion-mnist", "n_val": n_val}, "calibration": self.calibration,
                     "held_out": self.held_out}
        self.model = build(spec["model"])
        weights = work / "original.pt"
        if weights.exists():
            self.model.load_state_dict(torch.load(weights, weights_only=True))
        else:
            say(f"training the original {spec['model']} for {spec['pre_epochs']} epochs on {n_train} images (batch 64)")
            train_classifier(self.model, pre_loader, epochs=spec["pre_epochs"], lr=spec["pre_lr"])
            torch.save(self.model.state_dict(), weights)
        self.model.eval()
        self.original_accuracy = accuracy(self.model, self.val)
        self.x = torch.randn(*self.shape, generator=torch.Generator().manual_seed(0))
        self.analysis = analyse(self.model, self.x)
        self.cost_model = CostModel.build(self.model, self.x, ChannelMap.build(self.model, self.analysis))
        self.runtime = resolve_runtime("onnxruntime", 1)
        self.measured = MeasuredLatency(self.model, self.x, self.analysis, self.runtime)
        self.search = SearchOptions()
        self.latency, self.offered, self.latency_info = latency_source(
            LatencyOptions(runtime=self.runtime, threads=1, samples=24, db=str(work / "latency.sqlite")),
            self.model, self.x, self.analysis, self.runtime, self.measured, self.search, say)
        self.costs = search_costs(self.cost_model, self.latency)
        self.macs0 = self.cost_model.counts(self.analysis.space.full())[0]
        say(f"original: val accuracy {self.original_accuracy:.4f}; latency model {json.dumps(self.latency_info.get('validation', {}), default=str)[:200]}")

    def macs_ratio(self, widths) -> float:
        return self.cost_model.counts(widths)[0] / self.macs0

    def options(self, method: str, search_options: dict, epochs: int, seed: int, lr: float = 0.02):
        from slimdeploy.options import CompressOptions

        return CompressOptions.build(method=method, search_options=search_options, supernet_epochs=epochs,
                                     supernet_lr=lr, batch_size=self.batch, seed=seed)

    def provide(self, method: str, search_options: dict, epochs: int, seed: int, objective: str = "latency"):
        """(shared weights, wall seconds) for `method`, its cost the fitted latency or the MACs ratio."""
        from slimdeploy.search import get_searcher
        from slimdeploy.shared_weights import WeightsContext, provide

        kind = get_searcher(method, **search_options).shared_weights
        latency = self.latency if objective == "latency" else None
        offered = self.offered if objective == "latency" else None
        context = WeightsContext(self.model, self.x, self.analysis, self.data,
                                 self.options(method, search_options, epochs, seed), say,
                                 latency=latency, offered=offered)
        started = time.perf_counter()
        shared = provide(kind, context)
        return shared, time.perf_counter() - started

    def problem(self, shared, score: Callable, limit: float, costs: dict | None = None):
        from slimdeploy.search import SearchProblem

        return SearchProblem(self.analysis.space, costs or self.costs, {"latency": limit}, score,
                             self.search.align, self.search.min_fraction, self.offered, shared=shared)

    def deliver(self, shared, widths, finetune_epochs: int, seed: int) -> dict[str, Any]:
        """Extract, fine-tune (distilled from the original), accuracy on the validation subset, ORT-measured ratio."""
        from slimdeploy.train import accuracy, finetune

        pruned = shared.extract(widths, calibration=self.calibration)
        finetune(pruned, self.train_loader, finetune_epochs, lr=0.01, teacher=self.model, seed=seed)
        return {"accuracy": accuracy(pruned, self.val), "measured": self.measure(pruned)}

    def measure(self, module) -> float:
        path = self.runtime.export(module.eval(), self.x, self.measured.path("bench"))
        return float(self.runtime.compare([self.measured.reference, path], self.shape, rounds=8).ratios[1])

    @functools.cached_property
    def lowest(self) -> float:
        return self.latency(self.analysis.space.smallest(self.search.align, self.search.min_fraction))


def mean_std(values) -> str:
    import statistics

    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
