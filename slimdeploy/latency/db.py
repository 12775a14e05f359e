"""The latency database: measured figures kept in SQLite so repeated searches measure nothing twice.

A figure is keyed by structure fingerprint, widths, runtime name, runtime settings, device
fingerprint and kind; widths and settings are stored as canonical JSON (sorted keys) so the
same configuration always finds the same row. WAL mode and a busy timeout let two processes
share one file. `export`/`import_` move figures between machines as plain JSON (never pickle).
Standard library only: no torch here.
"""
from __future__ import annotations

import json
import math
import operator
import os
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import SlimdeployError

DEFAULT_ENV = "SLIMDEPLOY_DB"
SCHEMA_VERSION = 1
EXPORT_FORMAT = "slimdeploy.latency-db/1"
BUSY_TIMEOUT_S = 30.0

KEY_COLUMNS = ("structure", "widths", "runtime", "settings", "device", "kind")
VALUE_COLUMNS = ("median_ms", "iqr_ms", "cv", "runs", "payload", "created")
COLUMNS = KEY_COLUMNS + VALUE_COLUMNS
FILTERS = ("structure", "runtime", "device", "kind")

# The primary key starts with everything but the widths, so `get_many` reads one index range.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS figures (
    structure TEXT NOT NULL,
    runtime   TEXT NOT NULL,
    settings  TEXT NOT NULL,
    device    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    widths    TEXT NOT NULL,
    median_ms REAL,
    iqr_ms    REAL,
    cv        REAL,
    runs      INTEGER NOT NULL,
    payload   TEXT NOT NULL,
    created   REAL NOT NULL,
    PRIMARY KEY (structure, runtime, settings, device, kind, widths)
)
"""


def default_db_path() -> Path:
    """$SLIMDEPLOY_DB, else $XDG_CACHE_HOME/slimdeploy/latency.sqlite, else ~/.cache/slimdeploy/latency.sqlite."""
    explicit = os.environ.get(DEFAULT_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache and Path(cache).expanduser().is_absolute() else Path.home() / ".cache"
    return base / "slimdeploy" / "latency.sqlite"


@dataclass
class Figure:
    """One stored measurement."""

    structure: str            # structure fingerprint of the model family
    widths: dict[str, int]
    runtime: str              # runtime name, e.g. "onnxruntime"
    settings: dict            # runtime settings (threads, optimization, ...), JSON-able
    device: str               # device fingerprint (16 hex chars)
    kind: str                 # "latency" (end-to-end), "profile" (per-node times), ...
    median_ms: float
    iqr_ms: float
    cv: float
    runs: int
    payload: dict = field(default_factory=dict)  # anything else JSON-able
    created: float = 0.0      # unix time, filled on put


# -- canonical forms and validation


def _plain(obj: Any) -> Any:
    """json.dumps fallback: read-only mappings become dicts, numpy scalars Python numbers."""
    if isinstance(obj, Mapping):
        return dict(obj)
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(obj).__name__} is not JSON-able")


def _canonical(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_plain)
    except (TypeError, ValueError) as exc:
        raise SlimdeployError(f"{what} must be JSON-able: {exc}") from None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise SlimdeployError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _widths_json(widths: Any) -> str:
    """Canonical widths: sorted group names (strings) to positive ints."""
    if not isinstance(widths, Mapping):
        raise SlimdeployError(f"widths must be a dict of group name to width, got {type(widths).__name__}")
    clean = {}
    for name, width in widths.items():
        if not isinstance(name, str) or not name:
            raise SlimdeployError(f"widths: group name {name!r} must be a non-empty string")
        number = _integer(width, f"widths: {name}")
        if number <= 0:
            raise SlimdeployError(f"widths: {name} must be positive, got {number}")
        clean[name] = number
    return _canonical(clean, "widths")


def _dict_json(value: Any, what: str) -> str:
    if not isinstance(value, Mapping):
        raise SlimdeployError(f"{what} must be a dict, got {type(value).__name__}")
    return _canonical(dict(value), what)


def _number(value: Any, what: str) -> float:
    number = value
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        try:
            number = _plain(value)
        except TypeError:
            number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise SlimdeployError(f"{what} must be a number, got {value!r}")
    return float(number)


def _integer(value: Any, what: str) -> int:
    """An int (numpy integers too; not bools, not floats), or a clear error."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise SlimdeployError(f"{what} must be an integer, got {value!r}")


def _count(value: Any, what: str) -> int:
    number = _integer(value, what)
    if number < 0:
        raise SlimdeployError(f"{what} must not be negative, got {number}")
    return number


def _key(structure, widths, runtime, settings, device, kind) -> tuple[str, ...]:
    """Row key in KEY_COLUMNS order, canonical and validated."""
    return (_text(structure, "structure"), _widths_json(widths), _text(runtime, "runtime"),
            _dict_json(settings, "settings"), _text(device, "device"), _text(kind, "kind"))


def _row(figure: Figure) -> tuple:
    """The figure as a row in COLUMNS order, validated."""
    key = _key(figure.structure, figure.widths, figure.runtime, figure.settings, figure.device, figure.kind)
    created = _number(figure.created, "created")
    if created < 0:
        raise SlimdeployError(f"created must not be negative, got {created}")
    return key + (_number(figure.median_ms, "median_ms"), _number(figure.iqr_ms, "iqr_ms"),
                  _number(figure.cv, "cv"), _count(figure.runs, "runs"),
                  _dict_json(figure.payload, "payload"), created)


def _real(value: Any) -> float:
    return math.nan if value is None else float(value)  # SQLite stores NaN as NULL


def _figure(row: sqlite3.Row | tuple) -> Figure:
    """A stored row (COLUMNS order) back to a Figure."""
    values = dict(zip(COLUMNS, row))
    return Figure(structure=values["structure"], widths=json.loads(values["widths"]), runtime=values["runtime"],
                  settings=json.loads(values["settings"]), device=values["device"], kind=values["kind"],
                  median_ms=_real(values["median_ms"]), iqr_ms=_real(values["iqr_ms"]), cv=_real(values["cv"]),
                  runs=int(values["runs"]), payload=json.loads(values["payload"]), created=float(values["created"]))


def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise SlimdeployError(f"cannot filter figures by {', '.join(unknown)}; filters: {', '.join(FILTERS)}")
    used = {k: v for k, v in filters.items() if v is not None}
    if not used:
        return "", []
    return " WHERE " + " AND ".join(f"{k} = ?" for k in used), list(used.values())


# -- the database


class LatencyDB:
    """Measured figures in one SQLite file (or ":memory:"). Use as a context manager."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = _resolve(path)
        self._conn = _connect(self.path)

    # -- lifecycle

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "LatencyDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LatencyDB({str(self.path)!r})"

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SlimdeployError(f"latency database {self.path} is closed")
        return self._conn

    # -- figures

    def get(self, structure, widths, runtime, settings, device, kind="latency") -> Figure | None:
        """The figure stored under this key, or None."""
        key = _key(structure, widths, runtime, settings, device, kind)
        row = self.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM figures WHERE "
                                + " AND ".join(f"{c} = ?" for c in KEY_COLUMNS), key).fetchone()
        return None if row is None else _figure(row)

    def put(self, figure: Figure) -> None:
        """Store `figure`, replacing a row with the same key; fills `figure.created` when it is 0."""
        created = figure.created or time.time()
        row = _row(replace(figure, created=created))
        with self._write():
            self.conn.execute(_INSERT, row)
        figure.created = created

    def get_many(self, structure, runtime, settings, device, kind="latency") -> list[Figure]:
        """Every figure for one structure on one runtime, settings and device (any widths)."""
        key = (_text(structure, "structure"), _text(runtime, "runtime"), _dict_json(settings, "settings"),
               _text(device, "device"), _text(kind, "kind"))
        rows = self.conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM figures WHERE structure = ? AND runtime = ? AND settings = ? "
            "AND device = ? AND kind = ? ORDER BY widths", key).fetchall()
        return [_figure(r) for r in rows]

    def count(self, **filters) -> int:
        """Rows matching `filters` (structure, runtime, device, kind; None means any)."""
        where, params = _where(filters)
        return int(self.conn.execute(f"SELECT COUNT(*) FROM figures{where}", params).fetchone()[0])

    def groups(self, **filters) -> list[dict[str, Any]]:
        """Row counts per (structure, runtime, device, kind), for `slimdeploy db stats`."""
        where, params = _where(filters)
        rows = self.conn.execute(
            f"SELECT structure, runtime, device, kind, COUNT(*), MIN(created), MAX(created) FROM figures{where} "
            "GROUP BY structure, runtime, device, kind ORDER BY structure, runtime, device, kind", params)
        return [{"structure": s, "runtime": r, "device": d, "kind": k, "rows": n, "oldest": lo, "newest": hi}
                for s, r, d, k, n, lo, hi in rows]

    # -- moving figures between machines

    def _rows(self, **filters) -> Iterator[tuple]:
        where, params = _where(filters)
        yield from self.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM figures{where} ORDER BY "
                                     f"{', '.join(KEY_COLUMNS)}", params)

    def export(self, path: str | os.PathLike, **filters) -> int:
        """Write the figures matching `filters` to a JSON file, atomically; the number of rows written."""
        out = Path(path).expanduser()
        if out.is_dir():
            raise SlimdeployError(f"{out} is a directory; give a file name such as {out / 'latency.json'}")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        except OSError as exc:
            raise SlimdeployError(f"cannot write {out}: {exc}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                written = _write_export(f, (_figure(r) for r in self._rows(**filters)))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it private; an export is meant to be shared
            os.replace(tmp, out)
        except (OSError, sqlite3.Error) as exc:
            raise SlimdeployError(f"cannot write {out}: {exc}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return written

    def import_(self, path: str | os.PathLike) -> tuple[int, int]:
        """Add the figures of an exported file: (rows added or replaced, rows skipped as identical).

        The whole file is checked first and written in one transaction: a bad file changes nothing.
        """
        rows = _read_export(Path(path).expanduser())
        added = skipped = 0
        with self._write():
            for row in rows:
                key, values = row[:len(KEY_COLUMNS)], row[len(KEY_COLUMNS):]
                found = self.conn.execute(
                    f"SELECT {', '.join(VALUE_COLUMNS)} FROM figures WHERE "
                    + " AND ".join(f"{c} = ?" for c in KEY_COLUMNS), key).fetchone()
                if found is not None and _same(found, values):
                    skipped += 1
                    continue
                self.conn.execute(_INSERT, row)
                added += 1
        return added, skipped

    def _write(self) -> "_Transaction":
        return _Transaction(self.conn, self.path)


_INSERT = f"INSERT OR REPLACE INTO figures ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def _same(stored: tuple, values: tuple) -> bool:
    """Whether stored values equal imported ones (the creation time aside; NaN equals NaN)."""
    def norm(v):
        return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else v
    return [norm(v) for v in stored[:-1]] == [norm(v) for v in values[:-1]]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error; sqlite errors become SlimdeployError."""

    def __init__(self, conn: sqlite3.Connection, path: Path | str) -> None:
        self.conn, self.path = conn, path

    def __enter__(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise SlimdeployError(f"cannot write latency database {self.path}: {exc}; another process may hold "
                                  f"it, or the file is read-only") from None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.Error as error:
                exc_type, exc = type(error), error
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise SlimdeployError(f"cannot write latency database {self.path}: {exc}") from None


# -- opening


def _resolve(path: str | os.PathLike | None) -> Path | str:
    if path is None:
        return default_db_path()
    if str(path) == ":memory:":
        return ":memory:"
    return Path(path).expanduser()


def _connect(path: Path | str) -> sqlite3.Connection:
    """An open connection with the schema in place, or a SlimdeployError saying why not."""
    if path != ":memory:":
        path = Path(path)
        if path.is_dir():
            raise SlimdeployError(f"latency database {path} is a directory; give a file path such as "
                                  f"{path / 'latency.sqlite'}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SlimdeployError(f"cannot create the folder of latency database {path}: {exc}") from None
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise SlimdeployError(f"cannot open latency database {path}: {exc}; pass another --db") from None
    try:
        _check_schema(conn, path)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        with _Transaction(conn, path):
            _check_schema(conn, path)  # again, now that no other process can create it meanwhile
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise SlimdeployError(f"{path} is not a usable SQLite latency database ({exc}); pass another --db "
                              f"or remove the file") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path | str) -> None:
    """Refuse a newer schema and a SQLite file that belongs to something else."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SlimdeployError(f"latency database {path} has schema version {version}, newer than this slimdeploy "
                              f"reads ({SCHEMA_VERSION}); upgrade slimdeploy or pass another --db")
    if version == 0:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if tables and tables != ["figures"]:
            raise SlimdeployError(f"{path} is a SQLite database of something else (tables: {', '.join(tables)}), "
                                  f"not a slimdeploy latency database; pass another --db")


# -- the export file


def _write_export(f, figures: Iterator[Figure]) -> int:
    """Stream {"format", "exported", "rows": [...]} to `f`, one row a line; the number of rows."""
    f.write(f'{{"format": {json.dumps(EXPORT_FORMAT)}, "exported": {json.dumps(time.time())}, "rows": [')
    n = 0
    for figure in figures:
        f.write(("," if n else "") + "\n" + json.dumps(asdict(figure), sort_keys=True))
        n += 1
    f.write("\n]}\n")
    return n


def _read_export(path: Path) -> list[tuple]:
    """Validated rows (COLUMNS order) of an exported file, or a SlimdeployError saying what is wrong."""
    hint = "give a file written by `slimdeploy db export`"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SlimdeployError(f"{path} does not exist; {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SlimdeployError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SlimdeployError(f"{path} is not JSON ({exc}); {hint}") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise SlimdeployError(f"{path} is not a latency database export (format {found!r}, expected "
                              f"{EXPORT_FORMAT!r}); {hint}")
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise SlimdeployError(f"{path}: 'rows' must be a list; {hint}")
    return [_import_row(row, i, path) for i, row in enumerate(rows, 1)]


_FIELDS = [f.name for f in fields(Figure)]


def _import_row(row: Any, i: int, path: Path) -> tuple:
    where = f"{path}: row {i}"
    if not isinstance(row, dict):
        raise SlimdeployError(f"{where} must be an object, got {type(row).__name__}")
    missing = [name for name in _FIELDS if name not in row]
    unknown = sorted(set(row) - set(_FIELDS))
    if missing or unknown:
        problems = ([f"lacks {', '.join(missing)}"] if missing else []) + (
            [f"has unknown fields {', '.join(unknown)}"] if unknown else [])
        raise SlimdeployError(f"{where} {' and '.join(problems)}")
    try:
        return _row(Figure(**row))
    except SlimdeployError as exc:
        raise SlimdeployError(f"{where}: {exc}") from None
