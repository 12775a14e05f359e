"""`slimdeploy db export|import|stats`: move measured latencies between machines, see what is stored."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import SlimdeployError

DB_HELP = "latency database (default: $SLIMDEPLOY_DB, else the user cache)"


def register(sub) -> None:
    """Add `db` and its sub-commands to `sub` (argparse sub-parsers)."""
    p = sub.add_parser("db", help="export, import or summarise the latency database")
    dbsub = p.add_subparsers(dest="db_command", required=True)

    e = dbsub.add_parser("export", help="write stored figures to a JSON file (for `slimdeploy db import`)")
    e.add_argument("out", metavar="OUT.json", help="file to write (atomically)")
    e.add_argument("--db", help=DB_HELP)
    e.add_argument("--structure", metavar="FP", help="only this structure fingerprint")
    e.add_argument("--runtime", metavar="NAME", help="only this runtime")
    e.add_argument("--device", metavar="FP", help="only this device fingerprint")
    e.add_argument("--kind", metavar="K", help="only this kind of figure (latency, sample, ...)")
    e.set_defaults(func=cmd_export)

    i = dbsub.add_parser("import", help="add the figures of a file written by `slimdeploy db export`")
    i.add_argument("input", metavar="IN.json", help="file written by `slimdeploy db export`")
    i.add_argument("--db", help=DB_HELP)
    i.set_defaults(func=cmd_import)

    s = dbsub.add_parser("stats", help="rows stored per structure, runtime, device and kind")
    s.add_argument("--db", help=DB_HELP)
    s.set_defaults(func=cmd_stats)


def _existing(db: str | None) -> Path:
    """The database path; it must exist (reading must not create an empty database by mistake)."""
    from ..latency.db import default_db_path

    path = Path(db).expanduser() if db else default_db_path()
    if not path.exists():
        raise SlimdeployError(f"no latency database at {path}; nothing was measured there yet, or pass --db PATH")
    return path


def cmd_export(args: argparse.Namespace) -> int:
    from ..latency.db import LatencyDB

    with LatencyDB(_existing(args.db)) as db:
        rows = db.export(args.out, structure=args.structure, runtime=args.runtime, device=args.device,
                         kind=args.kind)
    print(json.dumps({"rows": rows, "path": str(args.out)}, indent=2))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..latency.db import LatencyDB

    if not Path(args.input).expanduser().is_file():
        raise SlimdeployError(f"{args.input} does not exist or is not a file; give a file written by "
                              f"`slimdeploy db export`")
    with LatencyDB(args.db) as db:
        added, skipped = db.import_(args.input)
    print(json.dumps({"added": added, "skipped": skipped}, indent=2))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from ..latency.db import LatencyDB, default_db_path

    path = Path(args.db).expanduser() if args.db else default_db_path()
    if not path.exists():
        print(json.dumps({"path": str(path), "exists": False, "rows": 0, "groups": []}, indent=2))
        return 0
    with LatencyDB(path) as db:
        result = {"path": str(path), "exists": True, "rows": db.count(), "groups": db.groups()}
    print(json.dumps(result, indent=2))
    return 0
