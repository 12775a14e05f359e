"""Shared weights for `--method cafenet`: a locally-free supernet trained by min-min over latency bins.

Settings come from the searcher's options (`zone`, `placements`, `granularity`), training from
`--supernet-epochs`, `--supernet-lr`, `--batch-size`, `--seed`; the bins from the pipeline's
latency source (the fitted latency model and its staircase), or the MACs ratio without one.
"""
from __future__ import annotations

from ..errors import SlimdeployError
from .cafenet import CafeNetWeights, LocalFreeSharing, latency_bins, minmin_step
from .pareco_provider import _cost, _supernet
from .runner import run_training
from .training import SupernetTraining


def provide(context) -> CafeNetWeights:
    from ..search import searcher_options

    s, t = context.options.search, context.options.train
    if t.supernet:
        raise SlimdeployError("--method cafenet trains its own locally-free supernet (min-min over latency bins); "
                              "--supernet takes a sandwich supernet (methods slim, evolution, twostage)")
    params = {**searcher_options(s.method), **s.search_options} if s.method else dict(s.search_options)
    zone, placements = int(params.get("zone", 1)), int(params.get("placements", 2))
    granularity = float(params.get("granularity", 4.0))
    if zone < 0 or placements < 1 or not granularity > 0:
        raise SlimdeployError("cafenet needs zone >= 0, placements >= 1 and granularity > 0")
    supernet = _supernet(context)
    choices = {g.name: supernet.choices(g.name) for g in supernet.space}
    if context.offered:  # the latency staircase: widths in between save nothing
        choices = {g: ([w for w in c if w in set(context.offered.get(g, c))] or c[-1:]) for g, c in choices.items()}
        choices = {g: sorted(set(c) | {supernet.choices(g)[-1]}) for g, c in choices.items()}
    bins = latency_bins(choices, _cost(context, supernet), granularity)
    sharing = LocalFreeSharing(supernet, zone)
    training = SupernetTraining(epochs=t.supernet_epochs, lr=t.supernet_lr, batch_size=t.batch_size, seed=t.seed)
    context.say(f"cafenet: training a locally-free supernet (zone {zone}, {placements} placements per width, "
                f"{sum(map(len, bins.values()))} bins over {len(bins)} groups) for {training.epochs} epoch(s)")
    step = minmin_step(supernet, sharing, bins, training.sandwich, placements, training.seed)
    result = run_training(supernet, context.data["train_set"], training, step, _NoState(), "cafenet", say=context.say)
    return CafeNetWeights(supernet, sharing, bins, placements, result)


class _NoState:
    """Min-min keeps nothing between steps (its widths and placements come from the step's seed)."""

    def to_json(self) -> dict:
        return {}

    def load_json(self, data: dict) -> None:
        pass
