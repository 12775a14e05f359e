"""`compress`'s settings, grouped: how to search, how to train, how to measure latency.

`CompressOptions.build(**settings)` routes flat keyword settings (what the CLI and a quick Python
call give: ``method="greedy", data="digits", threads=1``) to the group that owns each one and
refuses unknown names with the list of known ones. Budgets live beside these in `budget.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .errors import SlimdeployError
from .space import MIN_WIDTH_FRACTION


@dataclass
class SearchOptions:
    """How widths are chosen: the searcher and its parameters, the channels kept, the grid."""

    method: str = "uniform"
    search_options: dict[str, Any] = field(default_factory=dict)  # the searcher's constructor parameters
    importance: str = "l2"          # which channels a pruned group keeps
    align: int = 8                  # widths are multiples of this (and of a group's own divisor)
    min_fraction: float = MIN_WIDTH_FRACTION  # the narrowest a group may be made
    retries: int = 2                # re-searches with a tighter target when the delivered model measures over
    proxy: str | None = None        # search on a cheap proxy and project (transfer.parse_proxy: "width=0.5,data=0.2")


@dataclass
class TrainOptions:
    """Data and training: fine-tuning the delivered model, and the supernet for shared-weight searches."""

    data: str | None = None
    batch_size: int = 64
    finetune_epochs: int = 0
    lr: float = 0.01
    seed: int = 0
    supernet: str | None = None     # a directory from `slimdeploy supernet train` to search on
    supernet_epochs: int = 1        # when the search needs a supernet and none is given
    supernet_lr: float = 0.01


@dataclass
class LatencyOptions:
    """Where and how latency is measured, and what the search asks for it."""

    runtime: Any = "onnxruntime"    # a spec ("onnxruntime", "remote:http://HOST:PORT") or a Runtime
    threads: int | None = None
    latency_model: str = "fit"      # fit | measure | a directory from `slimdeploy profile`
    samples: int = 24
    sampling: str = "covering"      # covering | adaptive (latency.profile.build_profile)
    db: str | None = None


@dataclass
class CompressOptions:
    search: SearchOptions = field(default_factory=SearchOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    latency: LatencyOptions = field(default_factory=LatencyOptions)

    @classmethod
    def build(cls, **settings: Any) -> "CompressOptions":
        """Options from flat settings, each given to the group that has a field of its name."""
        options = cls()
        owners = {f.name: group for group in (options.search, options.train, options.latency) for f in fields(group)}
        unknown = sorted(set(settings) - set(owners))
        if unknown:
            raise SlimdeployError(f"unknown compress setting(s) {', '.join(unknown)}; known settings: "
                                  f"{', '.join(sorted(owners))}")
        for name, value in settings.items():
            setattr(owners[name], name, value)
        options.check()
        return options

    def check(self) -> None:
        t, s, lat = self.train, self.search, self.latency
        if t.finetune_epochs < 0 or t.supernet_epochs < 0 or t.batch_size <= 0:
            raise SlimdeployError("finetune_epochs and supernet_epochs must be >= 0 and batch_size > 0")
        if not (t.lr > 0 and t.supernet_lr > 0):
            raise SlimdeployError("learning rates must be positive")
        if lat.samples < 8:
            raise SlimdeployError(f"a latency model needs at least 8 samples, got {lat.samples}")
        if not 0 < s.min_fraction <= 1 or s.align < 1 or s.retries < 0:
            raise SlimdeployError("min_fraction must be in (0, 1], align >= 1 and retries >= 0")
        if s.proxy is not None:
            from .transfer.spec import parse_proxy

            s.proxy = parse_proxy(s.proxy).text()
            if t.supernet:
                raise SlimdeployError("a proxy search trains its own shared weights on the proxy; give --proxy or "
                                      "--supernet, not both")

    def to_json(self) -> dict[str, Any]:
        out = {name: {f.name: getattr(group, f.name) for f in fields(group)}
               for name, group in (("search", self.search), ("train", self.train), ("latency", self.latency))}
        if not isinstance(self.latency.runtime, str):
            out["latency"]["runtime"] = getattr(self.latency.runtime, "name", str(self.latency.runtime))
        return out
