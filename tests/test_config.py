"""--config FILE: options from TOML with the command line winning, refusals in one line, and a run
repeated from the config.toml it wrote."""
import json
import subprocess
import sys
from slimdeploy.tomlio import tomllib

import pytest

from slimdeploy import tomlio
from slimdeploy.cli import build_parser, main


def test_toml_writer_output_reads_back_equal():
    data = {"model": "pkg.mod:factory", "odd key": 'quote " back \\ newline \n tab \t del \x7f ctl \x01 é 😀',
            "n": 3, "x": 0.1, "tiny": 1e-12, "whole": 2.0, "big": float("inf"), "yes": True, "no": False,
            "list": ["population=24", "generations=2"], "numbers": [1, 2.5], "empty": [],
            "compress": {"latency": "0.5x", "samples": 8}}
    assert tomllib.loads(tomlio.dumps(data)) == data


def test_file_values_are_used_and_command_line_flags_override_them(tmp_path):
    config = tmp_path / "slimdeploy.toml"
    config.write_text('model = "slimdeploy.models:cifar_resnet8"\nthreads = 1\n\n[compress]\nlatency = "0.5x"\n'
                      'method = "evolution"\nsearch_option = ["population=24", "generations=2"]\nlr = 1\n'
                      'json = true\n\n[search]\nepochs = 9\n')
    args = build_parser().parse_args(["compress", "--config", str(config), "--out", "o"])
    assert (args.model, args.latency, args.method, args.threads) == ("slimdeploy.models:cifar_resnet8", "0.5x",
                                                                      "evolution", 1)
    assert args.search_option == ["population=24", "generations=2"] and args.lr == 1.0 and args.json is True
    assert args.samples == 24  # neither in the file nor given: the option's default

    args = build_parser().parse_args(["compress", "torchvision:resnet18", "--config", str(config), "--out", "o",
                                      "--latency", "0.3x", "--search-option", "population=6", "--threads", "2"])
    assert (args.model, args.latency, args.method, args.threads) == ("torchvision:resnet18", "0.3x", "evolution", 2)
    assert args.search_option == ["population=6"]  # the command line's list replaces the file's
    assert args.effective_config["search-option"] == ["population=6"]
    assert args.effective_config["latency"] == "0.3x" and "config" not in args.effective_config

    search = build_parser().parse_args(["search", "--config", str(config), "--data", "digits", "--latency", "0.4x",
                                        "--out", "s"])
    assert search.model == "slimdeploy.models:cifar_resnet8" and search.epochs == 9  # one file, several commands
    assert search.method == "evolution" and search.search_option == []  # [compress] is not search's


@pytest.mark.parametrize("text, message", [
    ('latncy = "0.5x"\n', "unknown key 'latncy' for `compress`; known keys: "),
    ('[compres]\nlatency = "0.5x"\n', "unknown table [compres]; tables are named after commands: "),
    ('samples = "many"\n', 'samples must be an integer, e.g. samples = 1, got \'many\''),
    ("latency = 0.5\n", "latency must be a string (in quotes)"),
    ('method = "fastest"\n', "method must be one of "),
    ('search-option = "population=24"\n', 'search-option takes a list, e.g. search-option = ["..."]'),
    ("quiet = 1\n", "quiet must be true or false"),
    ("samples = 8\nsamples = 9\n", "is not valid TOML"),
    ("samples = 8\n[compress]\nsamples = 8.5\n", "samples must be an integer"),
])
def test_bad_config_is_one_line_exit_code_2_and_nothing_written(tmp_path, monkeypatch, capsys, text, message):
    (tmp_path / "bad.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["compress", "slimdeploy.models:cifar_resnet8", "--latency", "0.5x", "--config", "bad.toml",
                 "--out", "o"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slimdeploy: error: bad.toml") and message in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_unknown_key_lists_every_option_of_the_command(tmp_path, capsys):
    (tmp_path / "c.toml").write_text('latncy = "0.5x"\n')
    assert main(["profile", "--config", str(tmp_path / "c.toml")]) == 2
    known = capsys.readouterr().err.split("known keys: ")[1].strip().split(", ")
    assert {"model", "input-shape", "runtime", "runtime-option", "samples", "test-fraction", "out"} <= set(known)
    assert "latency" not in known and "config" not in known


def test_missing_config_file_is_refused_in_one_line(tmp_path, capsys):
    assert main(["export", "--config", str(tmp_path / "none.toml")]) == 2
    assert "cannot read the config file" in capsys.readouterr().err


def test_compress_records_its_configuration_and_repeats_from_it(compressed_from_config, tmp_path):
    run = compressed_from_config
    written = tomllib.loads((run.out / "config.toml").read_text())
    report = json.loads((run.out / "report.json").read_text())
    assert report["config"] == written
    assert written["samples"] == 8  # the command line's --samples 8 over the file's 12
    assert (written["model"], written["input-shape"], written["latency"], written["search-option"]) == (
        "slimdeploy.models:cifar_resnet8", "1,3,16,16", "0.85x", ["steps=5"])
    assert written["retries"] == 5 and report["options"]["search"]["retries"] == 5  # a busy machine's re-searches
    assert report["options"]["latency"]["samples"] == 8 and report["options"]["search"]["search_options"] == \
        {"steps": 5}

    again = tmp_path / "again"
    done = subprocess.run([sys.executable, "-m", "slimdeploy", "compress", "--config", str(run.out / "config.toml"),
                           "--out", str(again), "--quiet"], capture_output=True, text=True, timeout=600, env=run.env)
    assert done.returncode == 0, done.stderr[-2000:]
    repeated = json.loads((again / "report.json").read_text())
    assert repeated["options"] == report["options"]
    assert repeated["budget"]["latency"] == report["budget"]["latency"] == "0.85x"
    assert repeated["config"] == {**written, "out": str(again), "quiet": True}
