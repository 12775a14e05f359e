"""TOML in and out: read with tomllib (tomli before Python 3.11), write flat tables ourselves.

The writer covers what slimdeploy records (a run's configuration): strings, integers, floats,
booleans and lists of those, at the top level or in one level of tables.
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Mapping

from .errors import SlimdeployError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["dumps", "load"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def load(path: str | Path) -> dict[str, Any]:
    """The TOML file at `path` as a dict; a missing or malformed file is one SlimdeployError line."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise SlimdeployError(f"cannot read the config file {path}: {exc.strerror or exc}; check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise SlimdeployError(f"{path} is not valid TOML: {exc}; fix that line (strings need quotes: "
                              f'latency = "0.5x")') from None


def dumps(data: Mapping[str, Any]) -> str:
    """TOML text for `data`: scalar and list values first, then one `[table]` per mapping value."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    for name, table in data.items():
        if isinstance(table, Mapping):
            lines += ["", f"[{_key(name)}]"]
            for k, v in table.items():
                if isinstance(v, Mapping):
                    raise TypeError(f"TOML writer: nested table {name}.{k} is not supported")
                lines.append(f"{_key(k)} = {_value(v)}")
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # always has '.' or 'e', which TOML needs to read it back as a float
    if isinstance(value, str):
        # JSON's escapes (\" \\ \n \u001f) are TOML's; DEL is the one control character JSON leaves raw
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"TOML writer: cannot write {type(value).__name__} value {value!r}")
