"""`--proxy width=0.5,depth=min,resolution=0.5,data=0.2`: what the cheap proxy is, checked at the edge.

Keys (any combination; each left out keeps the target's own setting):

* ``width``       global width multiplier in (0, 1], applied to the model by physical pruning;
* ``depth``       blocks kept per stage: ``min`` (one) or a positive integer (stages that repeat a block);
* ``resolution``  input height and width: a fraction in (0, 1] or pixels (``32px``);
* ``data``        share of the training data the proxy's weights are trained on, in (0, 1];
* ``epochs``      shared-weight training epochs of the proxy (default: the target's setting);
* ``stack``       how extra target blocks get widths: ``last`` (copy the stage's last proxy block),
  ``average`` (the per-slot mean over the stage's proxy blocks) or ``interpolate`` (linear over depth);
* ``cost``        what the proxy search is budgeted on: ``target`` (the target's costs of the projected
  widths; default) or ``proxy`` (the proxy's own latency, measured at its resolution, as the paper does).

This module imports nothing but the error type, so `options.py` can check a spec when it is given.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import SlimdeployError

STACK_RULES = ("last", "average", "interpolate")
COST_SOURCES = ("target", "proxy")
KEYS = ("width", "depth", "resolution", "data", "epochs", "stack", "cost")


@dataclass(frozen=True)
class ProxySpec:
    """A proxy: reductions of the target (None = unchanged) and how widths are projected back."""

    width: float = 1.0
    depth: int | None = None          # blocks kept per stage (None: all)
    resolution: float | None = None   # fraction of the target's input size
    pixels: int | None = None         # or an absolute input size
    data: float = 1.0
    epochs: int | None = None
    stack: str = "last"
    cost: str = "target"

    @property
    def reduces(self) -> bool:
        """True when the proxy differs from the target in any way."""
        return (self.width < 1 or self.depth is not None or self.resolution not in (None, 1.0)
                or self.pixels is not None or self.data < 1 or self.epochs is not None)

    def size(self, height: int, width: int) -> tuple[int, int]:
        """The proxy's input height and width for a target input of `height` × `width`."""
        if self.pixels is not None:
            return self.pixels, self.pixels
        r = self.resolution or 1.0
        return max(1, round(height * r)), max(1, round(width * r))

    def text(self) -> str:
        """The canonical `--proxy` text of this spec (what `parse_proxy` reads back)."""
        parts = []
        if self.width != 1.0:
            parts.append(f"width={self.width:g}")
        if self.depth is not None:
            parts.append(f"depth={'min' if self.depth == 1 else self.depth}")
        if self.pixels is not None:
            parts.append(f"resolution={self.pixels}px")
        elif self.resolution is not None:
            parts.append(f"resolution={self.resolution:g}")
        if self.data != 1.0:
            parts.append(f"data={self.data:g}")
        if self.epochs is not None:
            parts.append(f"epochs={self.epochs}")
        parts += [f"stack={self.stack}", f"cost={self.cost}"]
        return ",".join(parts)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_proxy(text: "str | ProxySpec") -> ProxySpec:
    """`ProxySpec` from ``"width=0.5,depth=min,resolution=0.5,data=0.2"``; one clear error per mistake."""
    if isinstance(text, ProxySpec):
        return text
    if not isinstance(text, str) or not text.strip():
        raise SlimdeployError(f"--proxy needs key=value pairs such as width=0.5,data=0.2; keys: {', '.join(KEYS)}")
    values: dict = {}
    for item in text.split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        key = key.lower()
        if not eq or not key or not value:
            raise SlimdeployError(f"--proxy item {item.strip()!r} must look like key=value (e.g. width=0.5)")
        if key not in KEYS:
            raise SlimdeployError(f"--proxy has no key {key!r}; known keys: {', '.join(KEYS)}")
        if key in values or (key == "resolution" and "pixels" in values):
            raise SlimdeployError(f"--proxy gives {key} twice")
        values.update(_value(key, value))
    spec = ProxySpec(**values)
    if not spec.reduces:
        raise SlimdeployError("--proxy must make the search cheaper: give width < 1, depth, resolution < 1, "
                              "data < 1 or epochs")
    return spec


def _value(key: str, text: str) -> dict:
    if key in ("stack", "cost"):
        allowed = STACK_RULES if key == "stack" else COST_SOURCES
        if text not in allowed:
            raise SlimdeployError(f"--proxy {key}={text!r}: choose one of {', '.join(allowed)}")
        return {key: text}
    if key == "depth":
        if text == "min":
            return {"depth": 1}
        return {"depth": _integer(key, text, "min or a positive number of blocks per stage")}
    if key == "epochs":
        return {"epochs": _integer(key, text, "a positive number of epochs")}
    if key == "resolution" and text.endswith("px"):
        return {"pixels": _integer(key, text[:-2], "a fraction in (0, 1] or pixels such as 32px")}
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise SlimdeployError(f"--proxy {key}={text!r} must be a fraction in (0, 1]"
                              + (" or pixels such as 32px" if key == "resolution" else ""))
    return {key: value}


def _integer(key: str, text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SlimdeployError(f"--proxy {key}={text!r} must be {what}")
    return value
