"""An adaptive-width network's directory: adaptive.json, weights.pt, checkpoint.pt.

Like a supernet's: state dicts and plain values only (`torch.load(weights_only=True)`), the model
rebuilt from its recorded source, every file written under a temporary name and renamed into
place so a killed run leaves its previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..checkpoint import rebuild
from ..errors import SlimdeployError
from ..space import atomic_write_text
from ..train.loop import LoopState
from ..train.run_files import atomic_save, load_plain, read_checkpoint, restore
from ..zoo import META

if TYPE_CHECKING:
    from .network import AdaptiveWidth

ADAPTIVE_FORMAT = "slimdeploy.adaptive/1"
CHECKPOINT_FORMAT = "slimdeploy.adaptive-checkpoint/1"
MANIFEST = "adaptive.json"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "weights.pt"
UNCHECKED = ("epochs", "checkpoint_every")  # settings a resumed run may change


def holds_run(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds an adaptive run (finished or checkpointed)."""
    directory = Path(directory)
    return (directory / MANIFEST).exists() or (directory / CHECKPOINT).exists()


def finished(directory: str | os.PathLike) -> bool:
    return (Path(directory) / MANIFEST).exists()


def save_checkpoint(out: Path, net: "AdaptiveWidth", optimizer: torch.optim.Optimizer, state: LoopState,
                    config: Any) -> None:
    """checkpoint.pt: weights and rates, optimizer, loop position and RNG, channel order, settings."""
    atomic_save({"format": CHECKPOINT_FORMAT, "net": net.state_dict(), "optimizer": optimizer.state_dict(),
                 "loop": state.to_dict(), "order": _order(net), "config": asdict(config)}, Path(out) / CHECKPOINT)


def load_checkpoint(out: Path, net: "AdaptiveWidth", optimizer: torch.optim.Optimizer, config: Any) -> LoopState | None:
    """Restore weights, rates, widths, optimizer and order from `out`; the loop state to continue from."""
    path = Path(out) / CHECKPOINT
    data = read_checkpoint(path, CHECKPOINT_FORMAT, "adaptive-width", asdict(config), UNCHECKED)
    if data is None:
        return None
    net.set_order(data["order"])
    restore(path, (net, data["net"]), (optimizer, data["optimizer"]))
    net.refresh()
    return LoopState(**data["loop"])


def write_adaptive(out: Path, net: "AdaptiveWidth", training: dict[str, Any]) -> None:
    """weights.pt and adaptive.json: everything `load_adaptive` needs."""
    out = Path(out)
    meta = getattr(net.model, META, None) or {}
    atomic_save(net.state_dict(), out / WEIGHTS)
    manifest = {"format": ADAPTIVE_FORMAT, "model": {"source": meta.get("source"), "steps": meta.get("steps", []),
                                                     "input_shape": list(net.example.shape)},
                "structure": net.space.fingerprint, "align": net.align, "min_fraction": net.min_fraction,
                "quantile": net.quantile, "order": _order(net), "learned_widths": net.learned_widths(),
                "groups": [g.to_json() for g in net.space], "training": training}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def load_adaptive(directory: str | os.PathLike) -> "AdaptiveWidth":
    """The adaptive-width network saved in `directory` (by `train_adaptive(out=...)`)."""
    from .network import AdaptiveWidth

    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise SlimdeployError(f"{directory} holds no finished adaptive-width network (no {MANIFEST}); train one "
                              f"with `slimdeploy search --method adaptive`, or finish it with --resume") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SlimdeployError(f"cannot read {directory / MANIFEST}: {exc}") from None
    if manifest.get("format") != ADAPTIVE_FORMAT:
        raise SlimdeployError(f"{directory / MANIFEST} is not a slimdeploy adaptive-width network")
    source = manifest["model"]
    if not source.get("source"):
        raise SlimdeployError(f"{directory / MANIFEST} records no source model to rebuild the network from")
    model = rebuild(source)
    setattr(model, META, {"source": source["source"], "steps": source.get("steps", []),
                          "input_shape": source["input_shape"]})
    example = torch.randn(*source["input_shape"], generator=torch.Generator().manual_seed(0))
    net = AdaptiveWidth(model, example, order=manifest["order"], align=manifest["align"],
                        min_fraction=manifest["min_fraction"], quantile=manifest["quantile"])
    if net.space.fingerprint != manifest["structure"]:
        raise SlimdeployError(f"{directory / MANIFEST} was made for structure {manifest['structure']}, but its model "
                              f"now gives {net.space.fingerprint}")
    try:
        net.load_state_dict(load_plain(directory / WEIGHTS))
    except RuntimeError as exc:
        raise SlimdeployError(f"cannot load {directory / WEIGHTS}: {str(exc).splitlines()[0]}") from None
    net.refresh()
    net.trained = manifest.get("training", {})
    return net.eval()


def _order(net: "AdaptiveWidth") -> dict[str, list[int]]:
    return {name: order.tolist() for name, order in net.order.items()}
