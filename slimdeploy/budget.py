"""Budgets: `--latency 0.5x` or `5ms`, optional `--macs` / `--params` caps (absolute or a fraction)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SlimdeployError

_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


@dataclass(frozen=True)
class Limit:
    """One cap: a fraction of the original (`relative`) or an absolute value."""

    value: float
    relative: bool
    text: str

    def resolve(self, original: float) -> float:
        return self.value * original if self.relative else self.value


def parse_latency(text: str) -> Limit:
    """'0.5x' (fraction of the original's measured latency) or '5ms' / '5'."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(x|ms)?\s*", str(text).lower())
    if not m or float(m.group(1)) <= 0 or (m.group(2) == "x" and float(m.group(1)) > 1):
        raise SlimdeployError(f"bad latency budget {text!r}: give a fraction of the original such as 0.5x "
                              f"(at most 1x) or milliseconds such as 5ms")
    return Limit(float(m.group(1)), m.group(2) == "x", str(text))


def parse_count(text: str, what: str) -> Limit:
    """'0.5x' or an absolute count with an optional k/M/G suffix ('300M')."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(x|k|m|g)?\s*", str(text).lower())
    if not m or float(m.group(1)) <= 0 or (m.group(2) == "x" and float(m.group(1)) > 1):
        raise SlimdeployError(f"bad {what} cap {text!r}: give a fraction such as 0.5x or a count such as 300M")
    if m.group(2) == "x":
        return Limit(float(m.group(1)), True, str(text))
    return Limit(float(m.group(1)) * _SUFFIX[m.group(2) or ""], False, str(text))


@dataclass(frozen=True)
class Budget:
    """All limits a compressed model must meet together; resolved against the original's figures."""

    latency: Limit
    macs: Limit | None = None
    params: Limit | None = None

    def resolve(self, latency_ms: float, macs: int, params: int) -> dict:
        return {"latency_ms": self.latency.resolve(latency_ms),
                "macs": self.macs.resolve(macs) if self.macs else None,
                "params": self.params.resolve(params) if self.params else None}

    @property
    def label(self) -> str:
        """A folder-safe name for this budget's delivery ("0.5x", "5ms")."""
        return self.latency.text.strip().lower().replace(" ", "")

    def to_json(self) -> dict:
        return {"latency": self.latency.text, "macs": self.macs.text if self.macs else None,
                "params": self.params.text if self.params else None}


def parse_budgets(latency: "str | list[str]", macs: str | None = None, params: str | None = None) -> list[Budget]:
    """One `Budget` per latency target ("0.3x,0.5x,0.7x" or a list), sharing the MACs/params caps."""
    texts = latency if isinstance(latency, (list, tuple)) else str(latency).split(",")
    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        raise SlimdeployError("give at least one latency budget, e.g. 0.5x or 0.3x,0.5x,0.7x")
    caps = (parse_count(macs, "MACs") if macs else None, parse_count(params, "params") if params else None)
    budgets = [Budget(parse_latency(t), *caps) for t in texts]
    labels = [b.label for b in budgets]
    if len(set(labels)) != len(labels):
        raise SlimdeployError(f"latency budgets repeat: {', '.join(texts)}")
    return budgets
