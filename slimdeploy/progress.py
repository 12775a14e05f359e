"""Progress of long steps: live bars on a terminal, plain lines in logs.

Long steps (training epochs, profiling samples, search evaluations) report each update with
`progress(say, key, done, total, line, note)`. A `say` from `stderr_say()` on a terminal draws
a live bar per key (tqdm) and prints other lines above the bars; anywhere else (a log, a pipe,
the Python API's `print`) only `line` is said, when the caller gives one, at the caller's pace.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, TextIO

__all__ = ["LiveSay", "bar", "progress", "stderr_say"]


def bar(done: int, total: int, width: int = 20) -> str:
    """``[########------------] 8/20``."""
    total = max(total, 1)
    filled = round(width * min(done, total) / total)
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}"


def progress(say: Callable[[str], None], key: str, done: int, total: int, line: str | None = None,
             note: str = "") -> None:
    """One update of the long step `key`: the live bar moves, or `line` (if any) is said as a plain line."""
    update = getattr(say, "update", None)
    if update is not None:
        update(key, done, total, note)
    elif line is not None:
        say(line)


def stderr_say(stream: TextIO | None = None) -> Callable[[str], None]:
    """A `say` for progress on `stream` (stderr): live bars when it is a terminal, plain lines otherwise."""
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return LiveSay(stream)
    return lambda text: print(text, file=stream, flush=True)


class LiveSay:
    """Plain lines printed above live tqdm bars, one bar per running step; a finished bar stays as a line."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.bars: dict = {}

    def __call__(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream)

    def update(self, key: str, done: int, total: int, note: str = "") -> None:
        from tqdm import tqdm

        live = self.bars.get(key)
        if live is not None and (live.total != total or done < live.n):  # another round of the same step
            live.close()
            live = None
        if live is None:
            live = self.bars[key] = tqdm(total=total, desc=key, file=self.stream, leave=True, **self._width())
        live.set_postfix_str(note, refresh=False)
        live.update(done - live.n)  # redrawn at most every tqdm `mininterval`
        if done >= total:
            live.close()
            del self.bars[key]

    def _width(self) -> dict:
        """Follow the terminal's width; a terminal that reports none (0 columns) gets 100."""
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        return {"dynamic_ncols": True} if columns else {"ncols": 100}
