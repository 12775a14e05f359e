"""Shared writer for benchmarks/RESULTS.md: one delimited section per benchmark.

    from results import write_section
    write_section("zoo", markdown, command="python benchmarks/zoo.py")

replaces the text between ``<!-- begin zoo -->`` and ``<!-- end zoo -->`` (or appends the
section when it is missing), stamped with the command that produced it, the date, the machine
(CPU model, cores, memory) and the versions of torch / torch-pruning / onnxruntime. Other
sections are left byte-for-byte alone. The file is rewritten atomically (temporary file in the
same folder, then rename) under an advisory lock, so two benchmarks finishing together cannot
lose each other's section. This module never imports torch.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import platform
import re
from importlib import metadata
from pathlib import Path

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "Each section below is written by one script under `benchmarks/` (through "
    "`benchmarks/results.py`) and says which command produced it, when, and on what machine. "
    "Re-running a benchmark replaces only its own section.\n"
)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), else platform's best guess."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_line() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = _memory_gb()
    memory = f", {mem:.0f} GB RAM" if mem else ""
    return f"{cpu_model()}, {cores} cores{memory}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions_line() -> str:
    return ", ".join(f"{dist} {_version(dist)}" for dist in ("torch", "torchvision", "torch-pruning", "onnxruntime"))


def provenance() -> dict:
    """Date, machine and versions of this run, to save beside results rendered later or elsewhere."""
    return {"date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "machine": machine_line(), "versions": versions_line()}


def stamp(command: str, origin: dict | None = None) -> str:
    """The provenance block put at the top of every section (`origin`: a saved `provenance()`)."""
    here = {**provenance(), **(origin or {})}
    return (f"*Command:* `{command}`  \n"
            f"*Date:* {here['date']}  \n"
            f"*Machine:* {here['machine']}  \n"
            f"*Versions:* {here['versions']}\n")


def replace_section(document: str, name: str, body: str) -> str:
    """`document` with section `name` replaced by `body` (appended when the section is missing)."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(document):
        return pattern.sub(lambda _: block, document, count=1)
    if not document.strip():
        document = HEADER
    return document.rstrip("\n") + "\n\n" + block + "\n"


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive flock on the file's folder (no stray lock file is left behind)."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_section(name: str, markdown: str, command: str, path: str | os.PathLike | None = None,
                  origin: dict | None = None) -> Path:
    """Replace (or append) section `name` of RESULTS.md with `markdown`, stamped; atomic write.

    `origin` (a `provenance()` saved with the results) stamps the machine that ran them.
    """
    if not _NAME.match(name):
        raise ValueError(f"section name {name!r} must be letters, digits, '_', '-' or '.'")
    path = Path(path) if path is not None else RESULTS_PATH
    body = stamp(command, origin=origin) + "\n" + markdown.strip() + "\n"
    with _locked(path):
        try:
            document = path.read_text()
        except FileNotFoundError:
            document = ""
        text = replace_section(document, name, body)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    return path


def reading_text(arg: str | None) -> str:
    """A section's reading from `--reading`: the text itself, or @FILE for a file's text ('' for none)."""
    if not arg:
        return ""
    return Path(arg[1:]).read_text().strip() if arg.startswith("@") else arg.strip()
