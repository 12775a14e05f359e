"""Text progress bars for long steps, one line per update (readable in logs and terminals alike)."""
from __future__ import annotations


def bar(done: int, total: int, width: int = 20) -> str:
    """``[########------------] 8/20``."""
    total = max(total, 1)
    filled = round(width * min(done, total) / total)
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}"
