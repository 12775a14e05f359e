"""Which channels a group loses: the least important, the same positions in every block."""
from __future__ import annotations

import torch


def channels_to_remove(scores: torch.Tensor, width: int, keep: int, divisor: int = 1) -> list[int]:
    """Indices of the `width - keep` least important channels.

    With `divisor` > 1 the channels form equal contiguous blocks (conv groups, heads); the same
    positions go from every block, ranked by their mean score across blocks.
    """
    scores = scores.detach().float().flatten().cpu()
    if scores.numel() != width:
        raise RuntimeError(f"importance gave {scores.numel()} scores for a group of {width} channels")
    block = width // divisor
    per_block = scores.view(divisor, block).mean(0)
    drop = torch.argsort(per_block)[: block - keep // divisor].tolist()
    return sorted(b * block + p for b in range(divisor) for p in drop)
