"""`--config FILE`: a command's options from a TOML file, the command line winning.

Every option of a command that calls `add_config_arg` can live in the file under its name
(dashes or underscores: ``finetune-epochs = 2``, ``finetune_epochs = 2``); the positional MODEL
is ``model``; a repeatable option takes a list (``search-option = ["population=24"]``).
Top-level keys apply to every command reading the file; a table named after a command
(``[compress]``) adds to and overrides them for that command, and tables of other commands are
ignored, so one file serves ``profile``, ``search`` and ``compress``. Keys a command does not
know, values of the wrong type and choices not on offer are refused before any work.

`ConfigParser` does this for any argparse parser: file values become the parse's defaults (a
flag given on the command line replaces them; for a repeatable option the command line's list
replaces the file's), and `args.effective_config` holds every option after precedence, ready
for `tomlio.dumps` so a run can be repeated with ``--config OUT/config.toml``.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Iterator

from . import tomlio
from .errors import SlimdeployError

__all__ = ["ConfigParser", "add_config_arg", "option_keys"]

_COMMANDS: set[str] = set()  # the commands that read a config file; their names are the file's table names
_SKIP = (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)


def add_config_arg(p: argparse.ArgumentParser, command: str) -> None:
    """Give `p` (the parser of `command`) a --config option; `p` must be a `ConfigParser`."""
    _COMMANDS.add(command)
    p.set_defaults(effective_config=None)
    p.add_argument("--config", metavar="FILE", help=f"read options from a TOML file (keys are option names, "
                                                    f"MODEL is `model`; a [{command}] table overrides top-level "
                                                    f"keys; flags given here win)")
    p._config_command = command


class ConfigParser(argparse.ArgumentParser):
    """An ArgumentParser whose parsers with a --config option (`add_config_arg`) read it first."""

    def parse_known_args(self, args=None, namespace=None):
        command = getattr(self, "_config_command", None)
        if command is None:
            return super().parse_known_args(args, namespace)
        args = list(sys.argv[1:] if args is None else args)
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config")
        path = pre.parse_known_args(args)[0].config
        keys = option_keys(self)
        values = _read(path, command, keys) if path else {}
        with _file_defaults(values):
            ns, extras = super().parse_known_args(args, namespace)
        for action, value in values.items():  # the command line's items replace the file's list
            current = getattr(ns, action.dest, None)
            if isinstance(action, argparse._AppendAction) and current is not None and len(current) > len(value):
                setattr(ns, action.dest, current[len(value):])
        ns.effective_config = {key: _plain(getattr(ns, action.dest)) for key, action in keys.items()
                               if getattr(ns, action.dest, None) is not None}
        return ns, extras


def option_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Config keys (dashed option names, positionals by their dest) → the parser's actions."""
    keys = {}
    for action in parser._actions:
        if isinstance(action, _SKIP) or action.dest in ("config", argparse.SUPPRESS):
            continue
        if action.option_strings:
            name = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
            keys[name.lstrip("-")] = action
        else:
            keys[action.dest.replace("_", "-")] = action
    return keys


def _read(path: str, command: str, keys: dict[str, argparse.Action]) -> dict[argparse.Action, Any]:
    """The file's values for `command`, checked and converted, by action."""
    data = tomlio.load(path)
    merged = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for name, table in data.items():
        if not isinstance(table, dict):
            continue
        if name not in _COMMANDS:
            raise SlimdeployError(f"{path}: unknown table [{name}]; tables are named after commands: "
                                  f"{', '.join(sorted(_COMMANDS))}")
        if name == command:
            merged.update(table)
    values, seen = {}, {}
    for raw, value in merged.items():
        key = raw.replace("_", "-")
        if key not in keys:
            raise SlimdeployError(f"{path}: unknown key {raw!r} for `{command}`; known keys: {', '.join(sorted(keys))}")
        if key in seen:
            raise SlimdeployError(f"{path}: {raw!r} and {seen[key]!r} are the same option for `{command}`; keep one")
        seen[key] = raw
        values[keys[key]] = _check(path, key, value, keys[key])
    return values


def _check(path: str, key: str, value: Any, action: argparse.Action) -> Any:
    """`value` converted to what the option takes, or one line saying what it should be."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise SlimdeployError(f"{path}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+") or isinstance(action.nargs, int):
        if not isinstance(value, list):
            raise SlimdeployError(f"{path}: {key} takes a list, e.g. {key} = [{_example(action)}], got {value!r}")
        return [_scalar(path, key, item, action) for item in value]
    return _scalar(path, key, value, action)


def _scalar(path: str, key: str, value: Any, action: argparse.Action) -> Any:
    kind = action.type or str
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        what = "an integer"
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value, what = (float(value) if ok else value), "a number"
    else:
        ok, what = isinstance(value, str), "a string (in quotes)"
        if ok and kind is not str:
            try:
                value = kind(value)
            except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
                raise SlimdeployError(f"{path}: bad {key} {value!r}: {exc}") from None
    if not ok:
        raise SlimdeployError(f"{path}: {key} must be {what}, e.g. {key} = {_example(action)}, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise SlimdeployError(f"{path}: {key} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return value


def _example(action: argparse.Action) -> str:
    if action.type is int:
        return "1"
    if action.type is float:
        return "0.5"
    if action.choices:
        return f'"{next(iter(action.choices))}"'
    return '"..."'


@contextlib.contextmanager
def _file_defaults(values: dict[argparse.Action, Any]) -> Iterator[None]:
    """The file's values as the actions' defaults (not required any more) for one parse."""
    saved = [(a, a.default, a.required, a.nargs) for a in values]
    try:
        for action, value in values.items():
            action.default, action.required = value, False
            if not action.option_strings and action.nargs is None:  # a positional the file gives
                action.nargs = "?"
        yield
    finally:
        for action, default, required, nargs in saved:
            action.default, action.required, action.nargs = default, required, nargs


def _plain(value: Any) -> Any:
    """A parsed value as TOML can hold it (Paths and other objects as text)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)
