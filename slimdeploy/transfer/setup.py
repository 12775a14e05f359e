"""Set up a search on a proxy for the pipeline and `slimdeploy search`: `with_proxy(searcher, context, runtime)`.

Builds the proxy the options' `proxy` spec describes, matches its groups to the target's (failing
early, naming the groups that cannot be matched), loads the data at the proxy's resolution and
cuts its training part, then trains the searcher's shared weights on the proxy (or scores on the
proxy's own weights for searchers that train none) and returns a `TransferSearch`.
"""
from __future__ import annotations

import functools
import time
from dataclasses import replace

from ..options import CompressOptions
from ..runtimes import Runtime
from ..search import Searcher
from ..shared_weights import WeightsContext, provide
from .layout import Layout
from .projection import Projection
from .proxy import Proxy, build_proxy, proxy_data
from .searcher import TransferSearch
from .spec import parse_proxy


def with_proxy(searcher: Searcher, context: WeightsContext, runtime: Runtime) -> TransferSearch:
    """`searcher` wrapped to search on the proxy of `context.model` and project onto it."""
    options, say = context.options, context.say
    s, t = options.search, options.train
    spec = parse_proxy(s.proxy)
    target_layout = Layout.of(context.model, context.example, context.analysis.space)
    proxy = build_proxy(context.model, context.example, spec, target_layout, s.align, s.importance, say)
    projection = Projection.match(context.analysis.space, target_layout, proxy.analysis.space, proxy.layout,
                                  spec.stack)
    data = None
    if t.data:
        from ..scoring import scoring_data

        data = proxy_data(scoring_data(t.data, tuple(proxy.example.shape), t.batch_size, t.seed), spec.data,
                          t.batch_size, t.seed)
    proxy_options = CompressOptions(
        search=replace(s, align=proxy.align, proxy=None),
        train=replace(t, supernet=None, supernet_epochs=spec.epochs or t.supernet_epochs), latency=options.latency)
    if not searcher.shared_weights and (spec.epochs or spec.data < 1):
        proxy.notes.append(f"{searcher.name} trains no weights: epochs and data only change the calibration "
                           f"batches")
    started = time.perf_counter()
    shared = None
    if searcher.shared_weights:
        shared = provide(searcher.shared_weights, WeightsContext(proxy.model, proxy.example, proxy.analysis, data,
                                                                 proxy_options, say))
        score, kind = shared.scorer(data["calibration"], data["held_out"]), shared.score_kind
    else:
        from ..scoring import original_scorer

        score, kind = original_scorer(proxy.model, proxy.example, proxy.analysis, data, s.importance)
    info = {"train_seconds": time.perf_counter() - started, "shared_weights": searcher.shared_weights,
            "train_images": len(data["train_set"]) if data else 0,
            "epochs": proxy_options.train.supernet_epochs if searcher.shared_weights else 0}
    costs = _proxy_costs(proxy, proxy_options, runtime, say) if spec.cost == "proxy" else None
    return TransferSearch(searcher, proxy, projection, functools.cache(score), kind, shared, costs, info,
                          target_layout.to_json())


def _proxy_costs(proxy: Proxy, options: CompressOptions, runtime: Runtime, say) -> dict:
    """The proxy's own cost vector: latency fitted on the runtime at the proxy's resolution, MACs, params."""
    from ..channels import ChannelMap
    from ..costs import CostModel
    from ..latency.oracle import MeasuredLatency
    from ..problem import latency_source, search_costs

    measured = MeasuredLatency(proxy.model, proxy.example, proxy.analysis, runtime)
    try:
        latency, _, _ = latency_source(replace(options.latency, latency_model="fit"), proxy.model, proxy.example,
                                       proxy.analysis, runtime, measured, options.search, say)
    finally:
        measured.close()
    return search_costs(CostModel.build(proxy.model, proxy.example, ChannelMap.build(proxy.model, proxy.analysis)),
                        latency)
