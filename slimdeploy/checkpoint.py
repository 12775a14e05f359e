"""Save a (pruned) model to a directory and load it back in a fresh process, without pickle.

A directory holds a recipe: `slimdeploy.json` (source spec, input shape, every pruning step),
`widths.json` (the last step's widths) and `weights.pt` (a state dict, read with
`weights_only=True`). Loading rebuilds the source model, replays the pruning steps to get the
same shapes, then loads the weights. A model with no spec can only be saved as a full pickle,
and only when the caller opts in on both save and load.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from . import zoo
from .analysis import analyse
from .errors import SlimdeployError
from .importance import FirstChannels
from .prune import prune
from .space import Widths

MODEL_FORMAT = "slimdeploy.model/1"
MANIFEST = "slimdeploy.json"


def save(model: nn.Module, directory: str | os.PathLike, allow_pickle: bool = False,
         extra_files: dict[str, str] | None = None) -> Path:
    """Write `model` to `directory` atomically (built in a temporary folder, then renamed)."""
    meta = dict(getattr(model, zoo.META, None) or {})
    manifest = {"format": MODEL_FORMAT, "input_shape": meta.get("input_shape")}
    if meta.get("source"):
        manifest.update(source=meta["source"], steps=meta.get("steps", []), weights="weights.pt")
    elif allow_pickle:
        manifest.update(pickle="model.pkl")
    else:
        raise SlimdeployError(
            "this model was not built from a model spec (torchvision:NAME or package.module:factory), so it "
            "can only be saved as a full pickle; pass allow_pickle=True (loading it will need it too)")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(directory)
    try:
        if "pickle" in manifest:
            torch.save(model, tmp / "model.pkl")
        else:
            torch.save(model.state_dict(), tmp / "weights.pt")
        if manifest.get("steps"):
            Widths.from_json(manifest["steps"][-1]["widths"]).save(tmp / "widths.json")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load(directory: str | os.PathLike, allow_pickle: bool = False) -> nn.Module:
    """Load a model saved by `save` as an `nn.Module` in eval mode."""
    directory = Path(directory)
    manifest = _read_manifest(directory)
    if "pickle" in manifest:
        if not allow_pickle:
            raise SlimdeployError(
                f"{directory} holds a pickled model, and unpickling can run arbitrary code; load it only if "
                f"you trust its origin, with allow_pickle=True (CLI: --allow-pickle)")
        model = torch.load(directory / manifest["pickle"], weights_only=False, map_location="cpu")
        return model.eval()
    model = rebuild(manifest)
    try:
        state = torch.load(directory / manifest["weights"], weights_only=True, map_location="cpu")
        model.load_state_dict(state)
    except (OSError, RuntimeError, KeyError) as exc:
        raise SlimdeployError(f"cannot load weights from {directory}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def rebuild(manifest: dict) -> nn.Module:
    """The source model with every recorded pruning step replayed (weights not loaded)."""
    model = zoo.build(manifest["source"])
    steps = manifest.get("steps", [])
    if steps:
        example = torch.randn(*manifest["input_shape"])
        for step in steps:
            ignored = step.get("ignored", [])
            widths = Widths.from_json(step["widths"])
            model = prune(model, widths, example, importance=FirstChannels(),
                          analysis=analyse(model, example, ignored), ignored=ignored)
    return model


def load_model(spec: str, allow_pickle: bool = False) -> nn.Module:
    """A model spec or a directory written by slimdeploy → `nn.Module`."""
    if os.path.isdir(spec):
        return load(spec, allow_pickle=allow_pickle)
    if os.path.exists(spec):
        raise SlimdeployError(f"{spec} is a file; MODEL must be torchvision:NAME, package.module:factory "
                              f"or a directory written by slimdeploy")
    return zoo.build(spec)


def make_temp_dir(final: Path) -> Path:
    """A private folder beside `final` to build an output in, with the permissions a new dir would get."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def replace_dir(src: Path, dst: Path, markers: tuple[str, ...] = (MANIFEST,)) -> None:
    """Move a finished directory into place; an existing `dst` is swapped out, never half-written.

    An existing non-empty `dst` is replaced only when it holds one of `markers` (it is a
    slimdeploy output of that kind), so a mistyped --out never deletes someone's folder.
    """
    if dst.exists():
        if not dst.is_dir() or (any(dst.iterdir()) and not any((dst / m).exists() for m in markers)):
            raise SlimdeployError(f"{dst} exists and is not a slimdeploy output; choose another --out")
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise SlimdeployError(f"{directory} is not a slimdeploy model directory (no {MANIFEST})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SlimdeployError(f"cannot read {path}: {exc}") from None
    if manifest.get("format") != MODEL_FORMAT:
        raise SlimdeployError(f"{path} has format {manifest.get('format')!r}, expected {MODEL_FORMAT!r}")
    manifest.setdefault("input_shape", None)
    if "pickle" not in manifest and not manifest.get("source"):
        raise SlimdeployError(f"{path} names neither a source model nor a pickle")
    return manifest
