"""Files of a resumable training run: written atomically, read without unpickling code, and a
checkpoint resumed only with the settings it was started with (supernets and adaptive width)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import torch

from ..errors import SlimdeployError


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save under a temporary name, then rename: a killed run leaves the previous file intact."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_plain(path: Path) -> Any:
    """State dicts and plain values only (`weights_only=True`); a damaged file is one clear error."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise SlimdeployError(f"{path} is missing") from None
    except Exception as exc:  # a truncated or foreign file raises many kinds
        raise SlimdeployError(f"cannot read {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                              f"the file is damaged or not a slimdeploy file") from None


def read_checkpoint(path: Path, fmt: str, what: str, settings: dict, unchecked: Iterable[str] = (),
                    where: str = "directory") -> dict | None:
    """The checkpoint at `path` (None when there is none), refused unless it is a `what` checkpoint
    (format `fmt`) started with the same `settings`, except those in `unchecked`."""
    if not path.exists():
        return None
    data = load_plain(path)
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise SlimdeployError(f"{path} is not a slimdeploy {what} checkpoint")
    saved = {k: v for k, v in data.get("config", {}).items() if k not in set(unchecked)}
    current = {k: v for k, v in settings.items() if k in saved}
    if saved != current:
        changed = sorted(k for k in saved if saved[k] != current.get(k))
        raise SlimdeployError(f"the run in {path.parent} was started with other settings ({', '.join(changed)}); "
                              f"resume it with the same ones, or start a new run in another {where}")
    return data


def restore(path: Path, *pairs: tuple[Any, dict]) -> None:
    """`target.load_state_dict(state)` for each pair; a mismatch says the file is for another model."""
    try:
        for target, state in pairs:
            target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise SlimdeployError(f"{path} does not fit this model ({str(exc).splitlines()[0]}); was it made for "
                              f"another model?") from None
