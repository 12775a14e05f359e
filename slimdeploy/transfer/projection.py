"""Project a proxy's widths onto the target: multipliers matched by position, then one global scale.

A proxy group's multiplier is its searched width over the proxy's own full width. Each target
group takes the multiplier of the proxy group at the same position (stage, block, slot; or the
same path outside the stages). When a target stage has more blocks than the proxy's, the blocks
beyond the proxy's are filled by layer stacking:

* ``last``: the slot's multiplier in the proxy stage's last block (stack-last);
* ``average``: the slot's mean over the proxy stage's blocks (stack-average);
* ``interpolate`` [Ours]: every target block b reads the proxy at depth b/(n_T−1)·(n_P−1), linearly.

A target stage with fewer blocks than the proxy's averages the proxy blocks its block covers
[Ours]. The projected width is γ·m·(target full width), on the target's grid; one γ is bisected so
the widths meet every limit of the target's search problem (its runtime, its resolution).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import SlimdeployError
from ..space import Widths, WidthSpace
from .layout import Layout, Position

BISECTION_STEPS = 40


class Unmappable(SlimdeployError):
    """Target groups without a counterpart in the proxy; names them."""

    def __init__(self, groups: dict[str, str]):
        shown = "; ".join(f"{name} ({where})" for name, where in list(groups.items())[:8])
        more = f" and {len(groups) - 8} more" if len(groups) > 8 else ""
        super().__init__(f"cannot map {len(groups)} channel group(s) of the target onto the proxy: {shown}{more}; "
                         f"the proxy must have the target's stages, block slots and layers outside the stages "
                         f"(width transfer needs the same architecture family)")
        self.groups = groups


@dataclass
class Projection:
    """For every target group, the proxy groups (with weights) whose multipliers it takes, and why."""

    target: WidthSpace
    proxy: WidthSpace
    sources: dict[str, list[tuple[str, float]]]
    rules: dict[str, str]
    positions: dict[str, str]

    @classmethod
    def match(cls, target: WidthSpace, target_layout: Layout, proxy: WidthSpace, proxy_layout: Layout,
              stack: str = "last") -> "Projection":
        """Match every target group to the proxy by position; `Unmappable` names the groups that cannot be."""
        by_position = {p: name for name, p in proxy_layout.positions.items()}
        sources, rules, missing = {}, {}, {}
        for g in target:
            where = target_layout.positions[g.name]
            found = _sources(where, target_layout, proxy_layout, by_position, stack)
            if found is None:
                missing[g.name] = str(where)
                continue
            sources[g.name], rules[g.name] = found
        if missing:
            raise Unmappable(missing)
        positions = {name: str(p) for name, p in target_layout.positions.items()}
        return cls(target, proxy, sources, rules, positions)

    def multipliers(self, proxy_widths: Widths) -> dict[str, float]:
        """Each target group's multiplier, from the proxy's widths relative to its full widths."""
        full = {g.name: g.width for g in self.proxy}
        m = {name: w / full[name] for name, w in proxy_widths.widths.items()}
        return {name: sum(weight * m[src] for src, weight in found) for name, found in self.sources.items()}

    def widths(self, multipliers: dict[str, float], scale: float, choices) -> Widths:
        """Target widths γ·m·full, each the nearest of `choices(group)` (ties to the wider)."""
        out = {}
        for g in self.target:
            wanted = scale * multipliers[g.name] * g.width
            out[g.name] = min(choices(g.name), key=lambda c: (abs(c - wanted), -c))
        return Widths(self.target.fingerprint, out)

    def to_json(self) -> dict:
        return {name: {"position": self.positions[name], "rule": self.rules[name],
                       "from": [[src, round(weight, 6)] for src, weight in self.sources[name]]}
                for name in self.sources}


def fit_scale(projection: Projection, multipliers: dict[str, float], problem) -> tuple[float, Widths]:
    """The largest global scale γ whose projected widths meet `problem`'s limits, and those widths.

    `problem` is the target's `SearchProblem` (its choices, costs and limits). Bisection over γ
    assumes cost grows with γ; when even the narrowest widths miss, `require_reachable` says so.
    """
    def at(scale: float) -> Widths:
        return projection.widths(multipliers, scale, problem.choices)

    smallest = min((m for m in multipliers.values() if m > 0), default=1.0)
    low, high = 0.0, 1.0 / smallest
    if problem.meets(at(high)):
        return high, at(high)
    if not problem.meets(at(low)):
        problem.require_reachable()
        raise SlimdeployError("no global scale of the projected widths meets the budget on the target")
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        if problem.meets(at(middle)):
            low = middle
        else:
            high = middle
    return low, at(low)


def _sources(where: Position, target: Layout, proxy: Layout, by_position: dict[Position, str],
             stack: str) -> tuple[list[tuple[str, float]], str] | None:
    if where.outside:
        name = by_position.get(where)
        return ([(name, 1.0)], "same layer") if name else None
    if where.stage >= len(proxy.stages) or proxy.stages[where.stage].block_class != \
            target.stages[where.stage].block_class:
        return None
    n_t, n_p = target.depth(where.stage), proxy.depth(where.stage)
    # the proxy blocks of this stage holding the slot, by block index
    have = {b: by_position[Position(where.stage, b, where.slot)] for b in range(n_p)
            if Position(where.stage, b, where.slot) in by_position}
    if not have:
        return None
    b = where.block
    if stack == "interpolate" and n_t != n_p and n_t > 1:
        depth = b / (n_t - 1) * (n_p - 1)
        lo, t = int(depth), depth - int(depth)
        weights = [(i, w) for i, w in ((lo, 1 - t), (min(lo + 1, n_p - 1), t)) if w > 1e-9]
        if all(i in have for i, _ in weights):
            return [(have[i], w) for i, w in weights], "interpolated over depth"
        return None
    if n_t < n_p:  # target shallower: average the proxy blocks this block covers
        covered = [i for i in range(b * n_p // n_t, max(b * n_p // n_t + 1, (b + 1) * n_p // n_t)) if i in have]
        if not covered:
            return None
        return [(have[i], 1 / len(covered)) for i in covered], "average of the proxy blocks it covers"
    if b < n_p:
        return ([(have[b], 1.0)], "same position") if b in have else None
    if stack == "average":
        return [(name, 1 / len(have)) for name in have.values()], "stack-average"
    return [(have[max(have)], 1.0)], "stack-last"
