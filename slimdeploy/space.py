"""Channel groups of a model, the `Widths` every stage speaks, and their JSON form.

Pure data: nothing here imports torch-pruning or touches a model. `analysis.py` builds a
`WidthSpace` from a model; search produces `Widths`; `prune.py` consumes them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random as _random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import SlimdeployError

WIDTHS_FORMAT = "slimdeploy.widths/1"
MIN_WIDTH_FRACTION = 0.2  # the narrowest a group may be made, as a share of its full width


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together (coupled across adds, concats, depthwise convs).

    `name` is the module path of the group's root layer, `width` its full channel count and
    `divisor` the granularity a width must respect (conv groups, attention heads), so every
    allowed width is a multiple of `divisor`. `layers` lists the module paths the group touches.
    """

    name: str
    width: int
    divisor: int = 1
    layers: tuple[str, ...] = ()

    def allowed(self, align: int = 1) -> list[int]:
        """Every width this group can take, as multiples of lcm(align, divisor) up to full."""
        unit = self.unit(align)
        return list(range(unit, self.width + 1, unit)) or [self.width]

    def choices(self, align: int = 8, min_fraction: float = MIN_WIDTH_FRACTION) -> list[int]:
        """The widths a search may give this group: allowed widths from `min_fraction`·full up to full.

        The one definition of a group's narrowest width: searches, random widths and latency
        sampling all draw from these, so a search never leaves the range a latency model was fitted on.
        """
        allowed = self.allowed(align)
        return [w for w in allowed if w >= min_fraction * self.width] or allowed[-1:]

    def unit(self, align: int = 1) -> int:
        """The step between allowed widths: lcm(align, divisor), or divisor when that is too coarse."""
        unit = math.lcm(max(1, align), self.divisor)
        return unit if unit <= self.width else self.divisor

    def to_json(self) -> dict:
        return {"name": self.name, "width": self.width, "divisor": self.divisor, "layers": list(self.layers)}


@dataclass(frozen=True, eq=False)
class Widths:
    """{group name → channel count} for one model structure (identified by its fingerprint).

    Immutable and hashable, so populations, caches and Pareto sets can key on it.
    """

    structure: str
    widths: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", dict(self.widths))  # a private copy; never mutated
        object.__setattr__(self, "_key", (self.structure, tuple(sorted(self.widths.items()))))

    def __getitem__(self, name: str) -> int:
        return self.widths[name]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Widths) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def replace(self, **changes: int) -> "Widths":
        """A copy with some groups' widths changed: ``widths.replace(**{"layer1.0.conv1": 32})``."""
        return Widths(self.structure, {**self.widths, **changes})

    def to_json(self) -> dict:
        return {"format": WIDTHS_FORMAT, "structure": self.structure, "widths": dict(self.widths)}

    @classmethod
    def from_json(cls, data: object, source: str = "widths") -> "Widths":
        if not isinstance(data, dict) or data.get("format") != WIDTHS_FORMAT:
            raise SlimdeployError(
                f"{source} is not a slimdeploy widths file: expected a JSON object with "
                f'"format": "{WIDTHS_FORMAT}" (write one with `slimdeploy prune` or Widths.save)')
        widths = data.get("widths")
        if not isinstance(data.get("structure"), str) or not isinstance(widths, dict):
            raise SlimdeployError(f'{source} needs a "structure" string and a "widths" object')
        for name, value in widths.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise SlimdeployError(f"{source}: width of group {name!r} must be an integer, got {value!r}")
        return cls(structure=data["structure"], widths=dict(widths))

    def save(self, path: str | os.PathLike) -> None:
        """Write widths.json atomically (temporary name, then rename)."""
        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Widths":
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise SlimdeployError(f"widths file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SlimdeployError(f"cannot read widths file {path}: {exc}") from None
        return cls.from_json(data, source=str(path))


@dataclass(frozen=True)
class WidthSpace:
    """All prunable channel groups of one model structure, with its fingerprint."""

    groups: tuple[ChannelGroup, ...]
    model_class: str = ""

    @property
    def fingerprint(self) -> str:
        """A stable hash of the structure: class, group names, full widths, divisors and layers."""
        canon = json.dumps([self.model_class, [g.to_json() for g in self.groups]], sort_keys=True)
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self):
        return iter(self.groups)

    def group(self, name: str) -> ChannelGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def full(self) -> Widths:
        return Widths(self.fingerprint, {g.name: g.width for g in self.groups})

    def uniform(self, multiplier: float, align: int = 8) -> Widths:
        """Every group at `multiplier` of full width, rounded to the alignment, within 1 unit..full."""
        if not 0 < multiplier <= 1:
            raise SlimdeployError(f"a width multiplier must be in (0, 1], got {multiplier}")
        out = {}
        for g in self.groups:
            unit = g.unit(align)
            out[g.name] = min(g.width, max(unit, round(g.width * multiplier / unit) * unit))
        return Widths(self.fingerprint, out)

    def smallest(self, align: int = 8, min_fraction: float = MIN_WIDTH_FRACTION) -> Widths:
        """Every group at the narrowest of its `choices`."""
        return Widths(self.fingerprint, {g.name: g.choices(align, min_fraction)[0] for g in self.groups})

    def random(self, seed: "int | _random.Random", align: int = 8,
               min_fraction: float = MIN_WIDTH_FRACTION) -> Widths:
        """Each group's width drawn uniformly from its `choices` (a seed or a `random.Random`)."""
        rng = seed if isinstance(seed, _random.Random) else _random.Random(seed)
        return Widths(self.fingerprint, {g.name: rng.choice(g.choices(align, min_fraction)) for g in self.groups})

    def validate(self, widths: Widths) -> Widths:
        """Check widths belong to this structure; groups left out keep full width."""
        if widths.structure != self.fingerprint:
            raise SlimdeployError(
                f"these widths were made for structure {widths.structure}, but this model's structure is "
                f"{self.fingerprint}; make widths for this model (slimdeploy inspect shows its groups)")
        known = {g.name: g for g in self.groups}
        unknown = sorted(set(widths.widths) - set(known))
        if unknown:
            raise SlimdeployError(
                f"unknown channel group(s) {', '.join(unknown[:5])}; this model's groups are listed by "
                f"`slimdeploy inspect`")
        out = {}
        for name, g in known.items():
            w = widths.widths.get(name, g.width)
            if not 1 <= w <= g.width:
                raise SlimdeployError(f"width {w} for group {name!r} is outside 1..{g.width}")
            if w % g.divisor:
                raise SlimdeployError(
                    f"width {w} for group {name!r} must be a multiple of {g.divisor} "
                    f"(its conv groups or attention heads)")
            out[name] = w
        return Widths(self.fingerprint, out)

    def to_json(self) -> dict:
        return {"structure": self.fingerprint, "model_class": self.model_class,
                "groups": [g.to_json() for g in self.groups]}


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file under a temporary name in the same folder, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def resolve_widths(space: WidthSpace, spec: "Widths | float | str", align: int = 8) -> Widths:
    """Widths from what a user typed: a Widths, a multiplier (0.5), 'random:SEED' or a widths.json path."""
    if isinstance(spec, Widths):
        return space.validate(spec)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return space.uniform(float(spec), align)
    text = str(spec)
    if text.startswith("random:"):
        try:
            seed = int(text.split(":", 1)[1])
        except ValueError:
            raise SlimdeployError(f"bad widths {text!r}: random needs an integer seed, e.g. random:0") from None
        return space.random(seed, align=align)
    try:
        multiplier = float(text)
    except ValueError:
        multiplier = None
    if multiplier is not None:
        return space.uniform(multiplier, align)
    if not os.path.exists(text):
        raise SlimdeployError(f"bad widths {text!r}: give a widths.json file, a multiplier such as 0.5, "
                              f"or random:SEED")
    return space.validate(Widths.load(text))
