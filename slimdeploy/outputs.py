"""A model's output as a flat, named list of tensors: tensors, tuples, lists and dicts nest freely
(segmentation returns {"out", "aux"}, detection a list of dicts per image)."""
from __future__ import annotations

from typing import Any

import torch


def named_tensors(output: Any, prefix: str = "output") -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor in `output`, depth first; names join keys and indices with '.'.

    A bare tensor is named `prefix`; `{"out": t}` gives `output.out`, `[{"boxes": b}]` `output.0.boxes`.
    """
    if isinstance(output, torch.Tensor):
        return [(prefix, output)]
    if isinstance(output, dict):
        items = output.items()
    elif isinstance(output, (list, tuple)):
        items = enumerate(output)
    else:
        return []
    found = []
    for key, value in items:
        found += named_tensors(value, f"{prefix}.{key}")
    return found


def tensors(output: Any) -> list[torch.Tensor]:
    """Every tensor in `output`, depth first."""
    return [t for _, t in named_tensors(output)]
