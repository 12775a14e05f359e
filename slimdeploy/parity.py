"""How closely ONNX Runtime reproduces PyTorch: per-output figures and the pass rule.

An element passes when it is within ``atol + rtol * |torch|`` (numpy's allclose) **or** within
``stol * scale`` of torch, where ``scale`` is the range (max - min) of that output over all
inputs. The second bound is what float32 arithmetic in a different order gives on large
activations (random-init Inception-V3 reaches the hundreds: 2 of 4000 logits sat at rel 1.2e-3
although every other figure agreed). Where an output is a 2-D (N, C>1) score table, every row's
argmax must agree as well; no tolerance accepts a top-1 disagreement. A failed report says which
single option (--atol, --rtol or --stol) would have accepted it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .errors import SlimdeployError

ATOL, RTOL, STOL = 1e-4, 1e-3, 1e-4
REL_FLOOR = 1e-3  # denominator floor of the relative error


class ParityError(SlimdeployError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerances."""


@dataclass
class ParityReport:
    """How closely ONNX Runtime reproduces PyTorch on `n_inputs` inputs (see the module docstring).

    Figures are over every output; `outputs` has them per output. `accepting` gives, for a failed
    check, the smallest atol (at this rtol), rtol (at this atol) and stol that would pass it.
    """

    max_abs_error: float
    max_rel_error: float
    top1_agreement: float | None
    n_inputs: int
    n_mismatched: int  # elements outside both the elementwise and the scaled bound
    n_elements: int
    atol: float
    rtol: float
    passed: bool
    runtime: str
    isolated: bool
    max_scaled_error: float = 0.0
    stol: float = STOL
    outputs: list[dict] = field(default_factory=list)
    accepting: dict = field(default_factory=dict)
    graph_stops: str | None = None  # where the exported graph ends, when it is not the whole model

    def to_json(self) -> dict:
        """A JSON-safe dict (non-finite errors become the strings "inf" / "nan")."""
        return _json_safe(asdict(self))

    def summary(self) -> str:
        """One line with every figure that decides `passed`, and what would accept a failure."""
        top1 = "n/a" if self.top1_agreement is None else f"{self.top1_agreement:.1%}"
        worst = max(self.outputs, key=lambda o: o["n_mismatched"], default=None) if len(self.outputs) > 1 else None
        where = f" (worst output {worst['name']})" if worst and worst["n_mismatched"] else ""
        line = (f"max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g}, "
                f"max error/range {self.max_scaled_error:.3g}, top-1 agreement {top1}, {self.n_mismatched} of "
                f"{self.n_elements} elements outside atol={self.atol:g} + rtol={self.rtol:g}*|torch| and "
                f"stol={self.stol:g}*range{where} over {self.n_inputs} inputs ({self.runtime})")
        if not self.passed:
            line += "; " + self.remedy()
        return line

    def remedy(self) -> str:
        """Which option would accept this failed check, or why none would."""
        if self.top1_agreement is not None and self.top1_agreement < 1.0:
            return "the top-1 class differs on some input, which no tolerance accepts"
        options = [f"--{k} {_round_up(v):g}" for k, v in self.accepting.items() if math.isfinite(v)]
        if not options:
            return "no single tolerance accepts it"
        either = options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"
        return f"it would pass with {either} (any one of them)"

    def raise_if_failed(self) -> None:
        """Raise `ParityError` with the figures when the check did not pass."""
        if not self.passed:
            raise ParityError(f"ONNX output does not match PyTorch: {self.summary()}")


def compare(reference: Sequence[Sequence[np.ndarray]], candidate: Sequence[Sequence[np.ndarray]],
            names: Sequence[str], atol: float = ATOL, rtol: float = RTOL, stol: float = STOL) -> dict:
    """Figures of `candidate[i][k]` (ONNX Runtime, input i, output k) against `reference` (PyTorch).

    Returns the `ParityReport` fields that depend on the arrays. Shape mismatches raise `ParityError`.
    """
    per_output = []
    for k, name in enumerate(names):
        pairs = []
        for i, (ref, cand) in enumerate(zip(reference, candidate)):
            if len(cand) != len(ref):
                raise ParityError(f"ONNX gave {len(cand)} outputs, PyTorch {len(ref)}")
            b, a = ref[k], cand[k]
            if a.shape != b.shape:
                raise ParityError(f"ONNX output {name} has shape {tuple(a.shape)} on input {i}, "
                                  f"PyTorch's has {tuple(b.shape)}")
            pairs.append((a.astype(np.float64), b.astype(np.float64)))
        per_output.append(_one_output(name, pairs, atol, rtol, stol))
    rows = sum(o.pop("_rows") for o in per_output)
    agree = sum(o.pop("_agree") for o in per_output)
    need = [o.pop("_need") for o in per_output]
    mismatched = sum(o["n_mismatched"] for o in per_output)
    top1 = agree / rows if rows else None
    return {
        "max_abs_error": max((o["max_abs_error"] for o in per_output), default=0.0),
        "max_rel_error": max((o["max_rel_error"] for o in per_output), default=0.0),
        "max_scaled_error": max((o["max_scaled_error"] for o in per_output), default=0.0),
        "top1_agreement": top1,
        "n_mismatched": mismatched,
        "n_elements": sum(o["n_elements"] for o in per_output),
        "passed": mismatched == 0 and (top1 is None or top1 == 1.0),
        "outputs": per_output,
        "accepting": {} if mismatched == 0 else
        {key: max(n[key] for n in need) for key in ("atol", "rtol", "stol")},
    }


def _one_output(name: str, pairs: list, atol: float, rtol: float, stol: float) -> dict:
    finite = [b[np.isfinite(b)] for _, b in pairs]
    values = np.concatenate([f.ravel() for f in finite]) if finite else np.zeros(0)
    scale = float(values.max() - values.min()) if values.size else 0.0
    out = {"name": name, "shape": list(pairs[0][1].shape) if pairs else [], "scale": scale,
           "max_abs_error": 0.0, "max_rel_error": 0.0, "max_scaled_error": 0.0, "n_mismatched": 0,
           "n_elements": 0, "top1_agreement": None,
           "_rows": 0, "_agree": 0, "_need": {"atol": 0.0, "rtol": 0.0, "stol": 0.0}}
    for a, b in pairs:
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(a == b, 0.0, np.abs(a - b))  # equal infinities count as equal
        diff = np.where(np.isnan(a) & np.isnan(b), 0.0, np.nan_to_num(diff, nan=np.inf))
        mag = np.abs(np.nan_to_num(b, nan=0.0))
        outside = ~((diff <= atol + rtol * mag) | (diff <= stol * scale))
        if diff.size:
            out["max_abs_error"] = max(out["max_abs_error"], float(diff.max()))
            out["max_rel_error"] = max(out["max_rel_error"], float((diff / np.maximum(mag, REL_FLOOR)).max()))
            out["max_scaled_error"] = max(out["max_scaled_error"], float(diff.max()) / scale if scale else
                                          (math.inf if diff.max() > 0 else 0.0))
        out["n_mismatched"] += int(outside.sum())
        out["n_elements"] += diff.size
        if outside.any():
            bad, m = diff[outside], mag[outside]
            need = out["_need"]
            need["atol"] = max(need["atol"], float((bad - rtol * m).max()))
            with np.errstate(divide="ignore", invalid="ignore"):
                need["rtol"] = max(need["rtol"], float(np.where(m > 0, (bad - atol) / m, np.inf).max()))
            need["stol"] = max(need["stol"], float(bad.max()) / scale if scale else math.inf)
        if b.ndim == 2 and b.shape[1] > 1:
            out["_agree"] += int((a.argmax(axis=1) == b.argmax(axis=1)).sum())
            out["_rows"] += b.shape[0]
    if out["_rows"]:
        out["top1_agreement"] = out["_agree"] / out["_rows"]
    return out


def _round_up(value: float) -> float:
    """Two significant digits, rounded up, so the printed option really accepts."""
    if value <= 0:
        return value
    exponent = math.floor(math.log10(value)) - 1
    return math.ceil(value / 10**exponent) * 10**exponent


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj
