import pytest

from slimdeploy.budget import Budget, parse_count, parse_latency
from slimdeploy.errors import SlimdeployError


def test_latency_budget_is_a_fraction_or_milliseconds():
    assert parse_latency("0.5x").resolve(10.0) == 5.0
    assert parse_latency("5ms").resolve(10.0) == 5.0
    assert parse_latency("7").resolve(10.0) == 7.0


@pytest.mark.parametrize("text", ["fast", "0x", "1.5x", "-3ms", ""])
def test_bad_latency_budget_says_what_to_give(text):
    with pytest.raises(SlimdeployError, match="0.5x .* or milliseconds such as 5ms"):
        parse_latency(text)


def test_caps_accept_fractions_and_counts_with_suffixes():
    assert parse_count("0.25x", "MACs").resolve(400e6) == 100e6
    assert parse_count("300M", "MACs").resolve(400e6) == 300e6
    assert parse_count("2.5k", "params").resolve(1) == 2500
    with pytest.raises(SlimdeployError, match="bad params cap"):
        parse_count("lots", "params")


def test_budget_resolves_every_limit_together():
    budget = Budget(parse_latency("0.5x"), parse_count("0.6x", "MACs"), None)
    assert budget.resolve(8.0, 1000, 50) == {"latency_ms": 4.0, "macs": 600.0, "params": None}
    assert budget.to_json() == {"latency": "0.5x", "macs": "0.6x", "params": None}
