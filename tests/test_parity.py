"""The parity rule: elementwise tolerance or tolerance relative to each output's range, top-1 agreement,
and the option a refusal names."""
import math
import re

import numpy as np
import pytest

from slimdeploy.parity import ParityError, ParityReport, compare


def _report(reference, candidate, names=("output",), **tolerances) -> ParityReport:
    figures = compare(reference, candidate, list(names), **tolerances)
    return ParityReport(n_inputs=len(reference), atol=tolerances.get("atol", 1e-4), rtol=tolerances.get("rtol", 1e-3),
                        stol=tolerances.get("stol", 1e-4), runtime="test", isolated=False, **figures)


def _large_logits():
    """Random-init Inception-like logits: hundreds, and a few near zero (where elementwise rtol is tight)."""
    rng = np.random.default_rng(0)
    torch_out = rng.normal(0, 300, size=(2, 1000)).astype(np.float32)
    torch_out[0, :3] = [0.0, 1e-3, -2e-3]
    ort_out = torch_out.copy()
    ort_out[0, :3] += np.float32(0.012)  # float32 error of a sum whose terms are in the hundreds
    return [[torch_out]], [[ort_out]]


def test_error_small_against_the_outputs_range_passes_by_default():
    reference, candidate = _large_logits()
    report = _report(reference, candidate)
    assert report.passed and report.n_mismatched == 0
    assert report.max_abs_error == pytest.approx(0.012, rel=1e-3)
    assert report.max_rel_error > 1  # elementwise, the near-zero logits are far off
    assert report.max_scaled_error < 1e-4  # against a range of thousands they are not
    assert report.outputs[0]["scale"] > 1000 and report.top1_agreement == 1.0


def test_elementwise_rule_alone_refuses_and_names_the_options_that_accept():
    reference, candidate = _large_logits()
    report = _report(reference, candidate, stol=0.0)
    assert not report.passed and report.n_mismatched == 3
    message = report.summary()
    assert "3 of 2000 elements outside atol=0.0001 + rtol=0.001*|torch| and stol=0*range" in message
    assert "it would pass with --atol 0.013 or --stol 5.8e-06 (any one of them)" in message  # no --rtol: |torch| is 0
    suggested = re.findall(r"--(atol|rtol|stol) ([0-9.e+-]+)", report.remedy())
    assert [option for option, _ in suggested] == ["atol", "stol"]
    for option, value in suggested:  # each printed value does accept on its own
        tolerances = {"atol": 1e-4, "rtol": 1e-3, "stol": 0.0, option: float(value)}
        assert _report(reference, candidate, **tolerances).passed, option
    with pytest.raises(ParityError, match="would pass with --atol"):
        report.raise_if_failed()


def test_top1_disagreement_is_refused_whatever_the_tolerance():
    reference = [[np.array([[1.0, 1.00001]], np.float32)]]
    candidate = [[np.array([[1.00001, 1.0]], np.float32)]]
    report = _report(reference, candidate, atol=1.0, stol=1.0)
    assert not report.passed and report.n_mismatched == 0 and report.top1_agreement == 0.0
    assert "the top-1 class differs on some input, which no tolerance accepts" in report.summary()


def test_every_output_is_compared_and_reported_by_name():
    good = np.linspace(-1, 1, 12, dtype=np.float32).reshape(1, 3, 4)
    bad = good.copy()
    bad[0, 0, 0] += 0.5
    report = _report([[good, good]], [[good, bad]], names=("output.out", "output.aux"))
    assert [o["name"] for o in report.outputs] == ["output.out", "output.aux"]
    assert [o["n_mismatched"] for o in report.outputs] == [0, 1]
    assert not report.passed and "worst output output.aux" in report.summary()
    assert report.to_json()["outputs"][1]["max_abs_error"] == pytest.approx(0.5)


def test_shape_mismatch_and_nan_handling():
    a = np.zeros((1, 4), np.float32)
    with pytest.raises(ParityError, match="output output has shape \\(1, 3\\) on input 0, PyTorch's has \\(1, 4\\)"):
        compare([[a]], [[a[:, :3]]], ["output"])
    nan = np.array([[np.nan, 1.0]], np.float32)
    assert _report([[nan]], [[nan.copy()]]).passed  # NaN matches NaN
    report = _report([[nan]], [[np.array([[0.0, 1.0]], np.float32)]])
    assert not report.passed and math.isinf(report.max_abs_error)
    assert report.to_json()["max_abs_error"] == "inf"
