import json

import pytest

from slimdeploy.errors import SlimdeployError
from slimdeploy.space import ChannelGroup, Widths, WidthSpace, resolve_widths


@pytest.fixture
def space():
    return WidthSpace((ChannelGroup("conv1", 64, 1, ("bn1", "conv1")),
                       ChannelGroup("layer.grouped", 96, 3, ("layer.grouped",)),
                       ChannelGroup("small", 6, 1, ("small",))), "test.Model")


def test_fingerprint_is_stable_and_changes_with_structure(space):
    again = WidthSpace(tuple(space.groups), "test.Model")
    wider = WidthSpace((ChannelGroup("conv1", 128, 1, ("bn1", "conv1")),) + space.groups[1:], "test.Model")
    assert space.fingerprint == again.fingerprint
    assert space.fingerprint != wider.fingerprint


def test_uniform_aligns_to_multiple_never_exceeds_full_and_respects_divisor(space):
    w = space.uniform(0.5)
    assert w["conv1"] == 32
    assert w["layer.grouped"] % 24 == 0 and w["layer.grouped"] <= 96   # lcm(8, 3) = 24
    assert 1 <= w["small"] <= 6                                          # group narrower than the alignment
    assert space.uniform(1.0).widths == space.full().widths
    assert all(v <= g.width for g, v in zip(space.groups, space.uniform(0.99).widths.values()))


def test_random_is_seeded_and_within_allowed_widths(space):
    a, b, c = space.random(1), space.random(1), space.random(2)
    assert a.widths == b.widths
    assert any(a.widths != space.random(s).widths for s in (2, 3, 4))
    for g in space.groups:
        assert a[g.name] in g.allowed(8) or a[g.name] == g.width
        assert a[g.name] % g.divisor == 0


def test_widths_json_round_trip(tmp_path, space):
    w = space.uniform(0.5)
    w.save(tmp_path / "widths.json")
    data = json.loads((tmp_path / "widths.json").read_text())
    assert data["format"] == "slimdeploy.widths/1" and data["structure"] == space.fingerprint
    assert Widths.load(tmp_path / "widths.json") == w
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("widths, message", [
    (lambda s: Widths("0" * 16, {}), "made for structure"),
    (lambda s: Widths(s.fingerprint, {"nope": 3}), "unknown channel group"),
    (lambda s: Widths(s.fingerprint, {"conv1": 65}), "outside 1..64"),
    (lambda s: Widths(s.fingerprint, {"conv1": 0}), "outside 1..64"),
    (lambda s: Widths(s.fingerprint, {"layer.grouped": 50}), "multiple of 3"),
])
def test_invalid_widths_are_clear_errors(space, widths, message):
    with pytest.raises(SlimdeployError, match=message):
        space.validate(widths(space))


def test_resolve_widths_accepts_multiplier_random_and_file(tmp_path, space):
    assert resolve_widths(space, "0.5") == space.uniform(0.5)
    assert resolve_widths(space, "random:3") == space.random(3)
    space.uniform(0.25).save(tmp_path / "w.json")
    assert resolve_widths(space, str(tmp_path / "w.json")) == space.uniform(0.25)
    with pytest.raises(SlimdeployError, match="random needs an integer seed"):
        resolve_widths(space, "random:x")
    with pytest.raises(SlimdeployError, match="give a widths.json file"):
        resolve_widths(space, str(tmp_path / "missing.json"))
    with pytest.raises(SlimdeployError, match=r"in \(0, 1\]"):
        resolve_widths(space, "1.5")


def test_a_file_that_is_not_widths_is_rejected(tmp_path):
    (tmp_path / "w.json").write_text('{"hello": 1}')
    with pytest.raises(SlimdeployError, match="not a slimdeploy widths file"):
        Widths.load(tmp_path / "w.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SlimdeployError, match="cannot read widths file"):
        Widths.load(tmp_path / "bad.json")


def test_widths_are_hashable_values_and_choices_have_one_narrowest_width():
    from slimdeploy.space import ChannelGroup, MIN_WIDTH_FRACTION, Widths, WidthSpace

    a, b = Widths("s", {"x": 8, "y": 16}), Widths("s", {"y": 16, "x": 8})
    assert a == b and hash(a) == hash(b) and len({a, b, a.replace(x=16)}) == 2
    assert a.replace(x=16)["x"] == 16 and a["x"] == 8
    g = ChannelGroup("g", 64, divisor=4)
    assert g.choices(8) == [16, 24, 32, 40, 48, 56, 64] and MIN_WIDTH_FRACTION == 0.2
    assert g.choices(8, 0.5) == [32, 40, 48, 56, 64] and ChannelGroup("t", 8).choices(8, 0.9) == [8]
    space = WidthSpace((g, ChannelGroup("h", 40)), "m")
    assert space.smallest(8).widths == {"g": 16, "h": 8}
    assert all(space.random(s)["g"] in g.choices(8) for s in range(20))
