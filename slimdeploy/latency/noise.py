"""The device's measurement noise, so a latency model's error can be told apart from it.

The same configuration timed twice (each time as a ratio to the full model, interleaved) differs
by the noise of two measurements: for independent errors of spread σ the difference has spread
σ·√2, so σ is estimated as the root mean square of the relative differences over √2. A held-out
figure carries that noise too: the model's own error is what is left of the held-out error once
σ is taken out in quadrature. A ±5 % target at 95 % of configurations cannot be checked when σ
alone exceeds 5 % / 1.96.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

TARGET = 0.05          # the ±5 % the latency model aims at
COVERAGE_Z = 1.96      # 95 % of a normal spread lies within 1.96 σ
CORRECT_ABOVE = 0.02   # below this floor the raw error is reported as it is


def noise_floor(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """σ of one measurement from repeated ones: `pairs` of (first, repeat) ratios of one configuration each."""
    diffs = [abs(a - b) / ((a + b) / 2) for a, b in pairs if a > 0 and b > 0]
    if not diffs:
        return {"repeats": 0}
    sigma = math.sqrt(sum(d * d for d in diffs) / len(diffs)) / math.sqrt(2)
    return {"repeats": len(diffs), "sigma": round(sigma, 5), "max_difference": round(max(diffs), 5),
            "differences": [round(d, 5) for d in diffs],
            "target_measurable": sigma <= TARGET / COVERAGE_Z}


def corrected(errors: Sequence[float], floor: dict[str, Any]) -> dict[str, Any]:
    """The held-out relative errors (predicted/measured − 1) with the noise floor taken out.

    `rms_error`: the raw root mean square; `rms_error_model`: its part not explained by σ; and
    `within_5pct_corrected`: the share within the ±5 % target widened by σ in quadrature (the raw
    share when σ is under 2 %, where the correction would be below the measurement's resolution)."""
    if not errors:
        return {}
    rms = math.sqrt(sum(e * e for e in errors) / len(errors))
    sigma = floor.get("sigma")
    out: dict[str, Any] = {"rms_error": round(rms, 5)}
    if sigma is None:
        return out
    tolerance = math.hypot(TARGET, sigma) if sigma > CORRECT_ABOVE else TARGET
    out.update(rms_error_model=round(math.sqrt(max(0.0, rms * rms - sigma * sigma)), 5),
               within_5pct_corrected=sum(abs(e) <= tolerance for e in errors) / len(errors),
               corrected_tolerance=round(tolerance, 5))
    return out


def warning(floor: dict[str, Any], threads: Any) -> str | None:
    """One line for the user when this device's noise makes the ±5 % target unmeasurable, else None."""
    if floor.get("repeats") and not floor.get("target_measurable", True):
        return (f"this device's measurement noise at {threads} thread(s) (σ {floor['sigma']:.1%} of a figure, "
                f"re-measured {floor['repeats']} times) makes ±5% unmeasurable; predictions are no better "
                f"than the noise (fewer threads, or a quieter machine, lower it)")
    return None


def noise_note(validation: dict[str, Any]) -> str:
    """'; noise floor σ 1.2% (model error 3.1%)' for a one-line summary of a validation, or ''."""
    sigma = (validation.get("noise_floor") or {}).get("sigma")
    if sigma is None:
        return ""
    model = validation.get("rms_error_model")
    return f"; noise floor σ {sigma:.1%}" + (f", model error beyond it {model:.1%} rms" if model is not None else "")
