"""A supernet's directory: supernet.json (what it is), weights.pt (shared weights), checkpoint.pt (to resume).

Nothing here unpickles code: weights and checkpoints are state dicts and plain values read with
`torch.load(weights_only=True)`; the model is rebuilt from its recorded source (a model spec plus
the pruning steps it went through), as saved pruned models are. Every file is written under a
temporary name and renamed into place, so a killed run leaves the previous checkpoint intact.
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
    from .core import Supernet

SUPERNET_FORMAT = "slimdeploy.supernet/1"
CHECKPOINT_FORMAT = "slimdeploy.supernet-checkpoint/1"
MANIFEST = "supernet.json"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "weights.pt"


def prepare_dir(out: Path, resume: bool) -> None:
    """Check `out` can take this run: new or empty, or (with resume) a run of ours to continue."""
    if out.exists() and not out.is_dir():
        raise SlimdeployError(f"{out} is a file; --out needs a directory")
    ours = out.is_dir() and ((out / MANIFEST).exists() or (out / CHECKPOINT).exists())
    if resume and not ours:
        raise SlimdeployError(f"nothing to resume in {out}: it holds no supernet checkpoint")
    if not resume and out.is_dir() and any(out.iterdir()):
        hint = "pass --resume to continue that run, or " if ours else ""
        raise SlimdeployError(f"{out} is not empty; {hint}choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def _order_json(supernet: "Supernet") -> dict[str, list[int]]:
    return {name: order.tolist() for name, order in supernet.order.items()}


def save_checkpoint(out: Path, supernet: "Supernet", optimizer: torch.optim.Optimizer, state: LoopState,
                    config: Any) -> None:
    """checkpoint.pt: weights, optimizer, loop position and RNG, channel order, training settings."""
    atomic_save({"format": CHECKPOINT_FORMAT, "model": supernet.model.state_dict(),
                 "optimizer": optimizer.state_dict(), "loop": state.to_dict(), "order": _order_json(supernet),
                 "config": asdict(config)}, Path(out) / CHECKPOINT)


def load_checkpoint(out: Path, supernet: "Supernet", optimizer: torch.optim.Optimizer, config: Any) -> LoopState | None:
    """Restore weights, optimizer and order from `out`'s checkpoint; the loop state to continue from."""
    path = Path(out) / CHECKPOINT
    data = read_checkpoint(path, CHECKPOINT_FORMAT, "supernet", asdict(config), ("epochs", "checkpoint_every"),
                           where="--out")
    if data is None:
        return None
    supernet.order = {name: torch.as_tensor(o, dtype=torch.long) for name, o in data["order"].items()}
    restore(path, (supernet.model, data["model"]), (optimizer, data["optimizer"]))
    return LoopState(**data["loop"])


def write_supernet(out: Path, supernet: "Supernet", training: dict[str, Any]) -> None:
    """weights.pt and supernet.json: everything `load_supernet` needs."""
    out = Path(out)
    meta = getattr(supernet.model, META, None) or {}
    atomic_save(supernet.model.state_dict(), out / WEIGHTS)
    manifest = {"format": SUPERNET_FORMAT, "model": {"source": meta.get("source"), "steps": meta.get("steps", []),
                                                     "input_shape": list(supernet.example.shape)},
                "structure": supernet.space.fingerprint, "align": supernet.align,
                "min_fraction": supernet.min_fraction, "order": _order_json(supernet),
                "groups": [g.to_json() for g in supernet.space], "notes": supernet.notes(), "training": training}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def read_manifest(directory: str | os.PathLike) -> dict:
    """supernet.json of a finished supernet directory (its model, channel order and training record)."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise SlimdeployError(f"{directory} holds no finished supernet (no {MANIFEST}); train one with "
                              f"`slimdeploy supernet train`, or finish it with --resume") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SlimdeployError(f"cannot read {path}: {exc}") from None
    if manifest.get("format") != SUPERNET_FORMAT:
        raise SlimdeployError(f"{path} is not a slimdeploy supernet (format {manifest.get('format')!r})")
    return manifest


def load_supernet(directory: str | os.PathLike) -> "Supernet":
    """The supernet saved in `directory` (by `slimdeploy supernet train` or `train_supernet(out=...)`)."""
    from .core import Supernet

    directory = Path(directory)
    manifest = read_manifest(directory)
    source = manifest["model"]
    if not source.get("source"):
        raise SlimdeployError(f"{directory / MANIFEST} records no source model to rebuild the supernet from")
    model = rebuild(source)
    setattr(model, META, {"source": source["source"], "steps": source.get("steps", []),
                          "input_shape": source["input_shape"]})
    example = torch.randn(*source["input_shape"], generator=torch.Generator().manual_seed(0))
    supernet = Supernet(model, example, order=manifest["order"], align=manifest["align"],
                        min_fraction=manifest["min_fraction"])
    if supernet.space.fingerprint != manifest["structure"]:
        raise SlimdeployError(f"{directory / MANIFEST} was made for structure {manifest['structure']}, but its model "
                              f"now gives {supernet.space.fingerprint} (another torchvision or slimdeploy version?)")
    try:
        supernet.model.load_state_dict(load_plain(directory / WEIGHTS))
    except RuntimeError as exc:
        raise SlimdeployError(f"cannot load {directory / WEIGHTS}: {str(exc).splitlines()[0]}") from None
    supernet.trained = manifest.get("training", {})
    return supernet.eval()


