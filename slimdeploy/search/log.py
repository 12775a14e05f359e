"""A search's checkpoint: the searcher's progress and every score computed, in one JSON file.

Written atomically after each unit of work (a generation, a slimming step), so a killed search
restarted with the same settings repeats nothing it had scored and continues from its last
saved state. Scores are keyed by widths and the structure fingerprint is checked on load.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import SlimdeployError
from ..space import Widths, WidthSpace, atomic_write_text

LOG_FORMAT = "slimdeploy.search-log/1"


class SearchLog:
    """`save(state, scores)` / `load(space) -> (state, scores) | None` for one search, keyed by `key`.

    `key` names what the saved progress is valid for (method, its parameters, the budget); a log
    written under another key is refused, so a resumed search never mixes two set-ups.
    """

    def __init__(self, path: str | Path, key: dict, writable: bool = True):
        self.path, self.key, self.writable = Path(path), key, writable

    def save(self, state: dict, scores: dict[Widths, float]) -> None:
        if not self.writable:  # under torchrun only rank 0 writes
            return
        data = {"format": LOG_FORMAT, "key": self.key, "state": state,
                "scores": [[dict(w.widths), s] for w, s in scores.items()],
                "structure": next(iter(scores)).structure if scores else None}
        atomic_write_text(self.path, json.dumps(data) + "\n")

    def load(self, space: WidthSpace) -> tuple[dict, dict[Widths, float]] | None:
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SlimdeployError(f"cannot read the search checkpoint {self.path}: {exc}; delete it to start "
                                  f"afresh") from None
        if data.get("format") != LOG_FORMAT:
            raise SlimdeployError(f"{self.path} is not a slimdeploy search checkpoint")
        if data.get("key") != json.loads(json.dumps(self.key)):
            raise SlimdeployError(f"{self.path} was written by a search with other settings; resume with the same "
                                  f"ones, or choose another --out")
        if data.get("structure") not in (None, space.fingerprint):
            raise SlimdeployError(f"{self.path} holds scores for another model structure")
        scores = {Widths(space.fingerprint, w): s for w, s in data.get("scores", [])}
        return data.get("state") or {}, scores
