"""The latency database: keys, round trips, export/import between machines, bad files, the CLI."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from slimdeploy.cli import main
from slimdeploy.errors import SlimdeployError
from slimdeploy.latency import db as dbmod
from slimdeploy.latency.db import EXPORT_FORMAT, Figure, LatencyDB, default_db_path

KEY = dict(structure="ab" * 8, widths={"layer1": 32, "conv1": 16}, runtime="onnxruntime",
           settings={"threads": 1, "optimization": "all"}, device="0123456789abcdef", kind="latency")


def fig(**changes) -> Figure:
    base = Figure(**KEY, median_ms=1.2345678901234567, iqr_ms=0.1 + 0.2, cv=1 / 3, runs=40,
                  payload={"ratio": 0.7071067811865476, "nodes": [["Conv_0", 0.125]], "device_info": {"cpu": "x"}})
    return replace(base, **changes)


@pytest.fixture
def db(tmp_path):
    with LatencyDB(tmp_path / "a" / "latency.sqlite") as database:
        yield database


def test_put_get_round_trip_is_exact(db):
    f = fig()
    db.put(f)
    assert f.created > 0
    got = db.get(**KEY)
    assert got == f
    assert type(got.median_ms) is float and type(got.runs) is int
    assert got.payload == {"ratio": 0.7071067811865476, "nodes": [["Conv_0", 0.125]], "device_info": {"cpu": "x"}}


@pytest.mark.parametrize("change", [
    {"widths": {"layer1": 32, "conv1": 8}}, {"widths": {"layer1": 32}}, {"settings": {"threads": 2}},
    {"device": "fedcba9876543210"}, {"kind": "profile"}, {"runtime": "torch"}, {"structure": "cd" * 8}])
def test_every_key_component_matters(db, change):
    db.put(fig())
    assert db.get(**{**KEY, **change}) is None


def test_widths_and_settings_order_do_not_matter(db):
    db.put(fig())
    assert db.get(**{**KEY, "widths": {"conv1": 16, "layer1": 32},
                     "settings": {"optimization": "all", "threads": 1}}) is not None


def test_read_only_mappings_and_numpy_like_numbers(db):
    from types import MappingProxyType

    class Int:  # an integer type that is not int, like numpy.int64
        def __init__(self, v):
            self.v = v

        def __index__(self):
            return self.v

        def item(self):
            return self.v

    db.put(fig(widths=MappingProxyType({"layer1": Int(32), "conv1": 16}), runs=Int(40),
               payload={"inner": MappingProxyType({"a": Int(1)})}))
    got = db.get(**KEY)
    assert got.widths == {"conv1": 16, "layer1": 32} and got.runs == 40 and got.payload == {"inner": {"a": 1}}


def test_same_key_replaces(db):
    db.put(fig())
    db.put(fig(median_ms=2.5, created=0.0))
    assert db.count() == 1 and db.get(**KEY).median_ms == 2.5


def test_get_many_and_count(db):
    for w in (8, 16, 24):
        db.put(fig(widths={"layer1": w, "conv1": 16}))
    db.put(fig(kind="profile"))
    db.put(fig(device="1" * 16))
    many = db.get_many(KEY["structure"], KEY["runtime"], KEY["settings"], KEY["device"])
    assert sorted(f.widths["layer1"] for f in many) == [8, 16, 24]
    assert db.count() == 5 and db.count(kind="profile") == 1 and db.count(device="1" * 16) == 1
    assert db.count(runtime="onnxruntime", kind=None) == 5
    with pytest.raises(SlimdeployError, match="filter"):
        db.count(widths="x")


@pytest.mark.parametrize("change, match", [
    ({"widths": {"a": 0}}, "positive"), ({"widths": {"a": 1.5}}, "integer"), ({"widths": {1: 8}}, "group name"),
    ({"widths": {"a": True}}, "integer"), ({"settings": {"x": object()}}, "JSON"), ({"median_ms": "1"}, "number"),
    ({"payload": [1]}, "dict"), ({"device": ""}, "device")])
def test_bad_figures_are_refused(db, change, match):
    with pytest.raises(SlimdeployError, match=match):
        db.put(fig(**change))
    assert db.count() == 0


def test_export_import_between_machines(db, tmp_path):
    figures = [fig(), fig(kind="profile", payload={"nodes": []}), fig(widths={"layer1": 8, "conv1": 8})]
    for f in figures:
        db.put(f)
    out = tmp_path / "moved" / "latency.json"
    assert db.export(out) == 3
    assert json.loads(out.read_text())["format"] == EXPORT_FORMAT
    assert db.export(tmp_path / "profile.json", kind="profile") == 1
    with LatencyDB(tmp_path / "other" / "machine" / "db.sqlite") as other:
        assert other.import_(out) == (3, 0)
        for f in figures:
            assert other.get(f.structure, f.widths, f.runtime, f.settings, f.device, f.kind) == f
        assert other.import_(out) == (0, 3)
        assert other.count() == 3


def test_import_replaces_a_different_figure(db, tmp_path):
    db.put(fig())
    db.export(tmp_path / "x.json")
    db.put(fig(median_ms=9.0, created=0.0))
    assert db.import_(tmp_path / "x.json") == (1, 0)
    assert db.get(**KEY).median_ms == fig().median_ms


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = fig().__dict__ | {"created": 1.0}
    cases = {
        "not json": ("{nope", "not JSON"),
        "wrong tag": (json.dumps({"format": "slimdeploy.widths/1", "rows": []}), "not a latency database export"),
        "rows not list": (json.dumps({"format": EXPORT_FORMAT, "rows": {}}), "must be a list"),
        "missing field": (json.dumps({"format": EXPORT_FORMAT,
                                      "rows": [good, {k: v for k, v in good.items() if k != "median_ms"}]}),
                          "row 2 lacks median_ms"),
        "bad width": (json.dumps({"format": EXPORT_FORMAT, "rows": [good, {**good, "widths": {"a": -8}}]}),
                      "row 2: widths"),
    }
    out = {}
    for name, (text, match) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        path.write_text(text)
        out[name] = (path, match)
    return out


def test_bad_import_files_change_nothing(db, tmp_path):
    db.put(fig(widths={"x": 8}))
    for name, (path, match) in _bad_files(tmp_path).items():
        with pytest.raises(SlimdeployError, match=match):
            db.import_(path)
        assert db.count() == 1, name
    with pytest.raises(SlimdeployError, match="does not exist"):
        db.import_(tmp_path / "missing.json")


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "db.sqlite"
    LatencyDB(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SlimdeployError, match="schema version 99.*upgrade slimdeploy"):
        LatencyDB(path)


def test_not_sqlite_and_directory_are_refused(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(SlimdeployError, match="not a usable SQLite"):
        LatencyDB(junk)
    assert junk.read_bytes().startswith(b"this is not")
    with pytest.raises(SlimdeployError, match="is a directory"):
        LatencyDB(tmp_path)
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    with pytest.raises(SlimdeployError, match="something else"):
        LatencyDB(foreign)


def test_two_connections_share_one_file(tmp_path):
    path = tmp_path / "shared.sqlite"
    with LatencyDB(path) as writer, LatencyDB(path) as reader:
        assert reader.get(**KEY) is None
        writer.put(fig())
        assert reader.get(**KEY) == writer.get(**KEY)
        reader.put(fig(kind="profile"))
        assert writer.count() == 2
        assert writer.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_memory_database():
    with LatencyDB(":memory:") as mem:
        mem.put(fig())
        assert mem.count() == 1


def test_default_path(monkeypatch, tmp_path):
    monkeypatch.setenv("SLIMDEPLOY_DB", str(tmp_path / "env.sqlite"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "env.sqlite"
    monkeypatch.delenv("SLIMDEPLOY_DB")
    assert default_db_path() == tmp_path / "xdg" / "slimdeploy" / "latency.sqlite"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / ".cache" / "slimdeploy" / "latency.sqlite"
    monkeypatch.setenv("SLIMDEPLOY_DB", str(tmp_path / "none" / "db.sqlite"))
    with LatencyDB() as d:
        assert d.path == tmp_path / "none" / "db.sqlite" and d.path.exists()


# -- the CLI


def test_cli_export_import_stats(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLIMDEPLOY_DB", str(tmp_path / "default.sqlite"))
    src = tmp_path / "src.sqlite"
    with LatencyDB(src) as d:
        d.put(fig())
        d.put(fig(kind="profile"))
    out = tmp_path / "exp.json"
    assert main(["db", "export", str(out), "--db", str(src), "--kind", "latency"]) == 0
    assert json.loads(capsys.readouterr().out) == {"rows": 1, "path": str(out)}
    assert main(["db", "import", str(out)]) == 0  # into $SLIMDEPLOY_DB
    assert json.loads(capsys.readouterr().out) == {"added": 1, "skipped": 0}
    assert main(["db", "import", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == {"added": 0, "skipped": 1}
    assert main(["db", "stats", "--db", str(src)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["path"] == str(src) and stats["rows"] == 2
    assert sorted((g["kind"], g["rows"]) for g in stats["groups"]) == [("latency", 1), ("profile", 1)]
    assert {g["device"] for g in stats["groups"]} == {KEY["device"]}
    assert main(["db", "stats", "--db", str(tmp_path / "never.sqlite")]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 0
    assert not (tmp_path / "never.sqlite").exists()


def test_cli_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLIMDEPLOY_DB", str(tmp_path / "default.sqlite"))
    assert main(["db", "import", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "missing.json does not exist" in err and "slimdeploy db export" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "nope"}')
    assert main(["db", "import", str(bad)]) == 2
    assert "not a latency database export" in capsys.readouterr().err
    assert main(["db", "export", str(tmp_path / "o.json"), "--db", str(tmp_path / "nodb.sqlite")]) == 2
    assert "no latency database" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["db"])  # a sub-command is required


def test_failed_export_leaves_no_file(tmp_path, capsys, monkeypatch):
    src = tmp_path / "src.sqlite"
    with LatencyDB(src) as d:
        d.put(fig())
        d.put(fig(kind="profile"))
    outdir = tmp_path / "out"
    outdir.mkdir()

    original = LatencyDB._rows

    def broken(self, **filters):  # the first row, then the disk fills up
        yield next(iter(original(self, **filters)))
        raise OSError("disk full")

    monkeypatch.setattr(LatencyDB, "_rows", broken)
    assert main(["db", "export", str(outdir / "x.json"), "--db", str(src)]) == 2
    assert "disk full" in capsys.readouterr().err
    assert list(outdir.iterdir()) == []
    assert main(["db", "export", str(outdir), "--db", str(src)]) == 2  # a directory as OUT
    assert "is a directory" in capsys.readouterr().err


def test_db_module_does_not_import_torch():
    code = "import sys, slimdeploy.latency.db; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "import pickle" not in Path(dbmod.__file__).read_text()
