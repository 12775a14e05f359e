"""Shared weights for `--method pareco`, `slim-uniform` and `twostage`, trained for the pipeline.

Each provider reads its settings from the searcher's options (`--search-option visits=40`),
its training from `--supernet-epochs`, `--supernet-lr`, `--batch-size`, `--seed`, and its cost
from the pipeline's latency source (the fitted latency model's ratio to the original); without
one, the MACs ratio. `twostage` also takes a trained sandwich supernet (`--supernet DIR`) as
its first stage; PareCO and Slim train their own.
"""
from __future__ import annotations

from typing import Callable, Mapping

from ..channels import ChannelMap
from ..costs import CostModel
from ..errors import SlimdeployError
from ..space import Widths
from ..train import unpack
from ..train.evaluate import model_device
from .core import Supernet
from .pareco import ParecoSettings, ParecoWeights, batch_losses, mobo_search, train_joint
from .store import load_supernet
from .training import SupernetTraining, train_supernet


def pareco(context) -> ParecoWeights:
    return _joint(context, "pareco", "pareco")


def slim_uniform(context) -> ParecoWeights:
    return _joint(context, "slim-uniform", "uniform")


def twostage(context) -> ParecoWeights:
    """Stage 1: random heterogeneous widths (sandwich rule); stage 2: MOBO-RS on the trained weights."""
    settings, training = _settings(context)
    if context.options.train.supernet:
        supernet = _loaded(context)
        trained: dict = dict(getattr(supernet, "trained", {}))
    else:
        supernet = _supernet(context)
        context.say(f"twostage: training a supernet on random widths for {training.epochs} epoch(s)")
        trained = train_supernet(supernet, context.data["train_set"], training, say=context.say)
    sampler = settings.sampler(_choices(supernet), _cost(context, supernet), training.seed)
    context.say(f"twostage: MOBO-RS search over {settings.visits} width vectors on the trained weights")
    run = mobo_search(supernet, sampler, context.data["calibration"][0], settings.visits, settings.num_sampled,
                      training.seed, context.say)
    return ParecoWeights(supernet, run, sampler, "pareco", "twostage", trained)


def _joint(context, kind: str, mode: str) -> ParecoWeights:
    if context.options.train.supernet:
        raise SlimdeployError(f"--method {kind} trains its own shared weights jointly with its widths; --supernet "
                              f"takes a sandwich supernet (methods slim, evolution, twostage)")
    settings, training = _settings(context)
    supernet = _supernet(context)
    weights = train_joint(supernet, context.data["train_set"], training, settings, _cost(context, supernet), mode,
                          kind, say=context.say)
    inputs, labels = unpack(context.data["calibration"][0], model_device(supernet))
    history = weights.run.history  # re-measured once with the final weights, for the front
    history.rescore(batch_losses(supernet, [v.widths for v in history.visits], inputs, labels))
    return weights


def _settings(context) -> tuple[ParecoSettings, SupernetTraining]:
    from ..search import searcher_options

    s, t = context.options.search, context.options.train
    params = {**searcher_options(s.method), **s.search_options} if s.method else dict(s.search_options)
    settings = ParecoSettings.pick(params)
    if settings.visits < 2 or settings.num_sampled < 1 or settings.prior_points < 2:
        raise SlimdeployError("PareCO needs visits >= 2, num_sampled >= 1 and prior_points >= 2")
    training = SupernetTraining(epochs=t.supernet_epochs, lr=t.supernet_lr, batch_size=t.batch_size, seed=t.seed,
                                sandwich=2 + settings.num_sampled)
    return settings, training


def _supernet(context) -> Supernet:
    s = context.options.search
    return Supernet(context.model, context.example, context.analysis,
                    importance=s.importance if s.importance != "taylor" else "l2", align=s.align,
                    min_fraction=s.min_fraction)


def _loaded(context) -> Supernet:
    t = context.options.train
    supernet = load_supernet(t.supernet)
    if supernet.space.fingerprint != context.analysis.space.fingerprint:
        raise SlimdeployError(f"the supernet in {t.supernet} was trained for structure {supernet.space.fingerprint}, "
                              f"this model is {context.analysis.space.fingerprint}")
    return supernet


def _choices(supernet: Supernet) -> dict[str, list[int]]:
    return {g.name: supernet.choices(g.name) for g in supernet.space}


def _cost(context, supernet: Supernet) -> Callable[[Mapping[str, int]], float]:
    """widths → the pipeline's latency ratio, or the MACs ratio when it has no latency source."""
    fingerprint = supernet.space.fingerprint
    latency = getattr(context, "latency", None)
    if latency is not None:
        return lambda w: float(latency(Widths(fingerprint, w)))
    costs = CostModel.build(context.model, context.example, ChannelMap.build(context.model, context.analysis))
    full = costs.counts(supernet.space.full())[0]
    return lambda w: costs.counts(w)[0] / full
