"""The widths PareCO has visited, each with its cost and its latest loss under the current weights."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np


@dataclass
class Visit:
    """One visited width vector: its cost (latency ratio or MACs ratio) and loss (None until scored)."""

    widths: dict[str, int]
    cost: float
    loss: float | None = None


@dataclass
class History:
    """Visited widths in order; `alphas()` maps them to [0, 1]^D for the surrogates.

    `groups` fixes the order of the width variables, `full` each one's full width and `lowest`
    each one's narrowest (α_min): α = (w − lowest) / (full − lowest).
    """

    groups: list[str]
    full: dict[str, int]
    lowest: dict[str, int]
    visits: list[Visit] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.visits)

    def add(self, widths: Mapping[str, int], cost: float) -> bool:
        """Append `widths` unless already visited; True when added."""
        if any(v.widths == dict(widths) for v in self.visits):
            return False
        self.visits.append(Visit(dict(widths), float(cost)))
        return True

    def scored(self) -> list[Visit]:
        return [v for v in self.visits if v.loss is not None]

    def rescore(self, losses: Iterable[float]) -> None:
        """Set every visit's loss (in order) to the given values, measured with the current weights."""
        for visit, loss in zip(self.visits, losses, strict=True):
            visit.loss = float(loss)

    def alpha(self, widths: Mapping[str, int]) -> np.ndarray:
        return np.array([(widths[g] - self.lowest[g]) / max(self.full[g] - self.lowest[g], 1) for g in self.groups])

    def alphas(self, visits: list[Visit] | None = None) -> np.ndarray:
        visits = self.visits if visits is None else visits
        return np.array([self.alpha(v.widths) for v in visits]).reshape(len(visits), len(self.groups))

    def to_json(self) -> dict[str, Any]:
        return {"groups": self.groups, "full": self.full, "lowest": self.lowest,
                "visits": [[v.widths, v.cost, v.loss] for v in self.visits]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "History":
        visits = [Visit(dict(w), float(c), None if l is None else float(l)) for w, c, l in data["visits"]]
        return cls(list(data["groups"]), dict(data["full"]), dict(data["lowest"]), visits)
