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
from .guard import LimitExceeded
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
    """Load a model saved by `save` as an `nn.Module` in eval mode.

    A damaged directory (a file truncated, overwritten or edited: the manifest, widths.json or
    the weights) raises `SlimdeployError` naming the file and what to do.
    """
    directory = Path(directory)
    manifest = _read_manifest(directory)
    if "pickle" in manifest:
        if not allow_pickle:
            raise SlimdeployError(
                f"{directory} holds a pickled model, and unpickling can run arbitrary code; load it only if "
                f"you trust its origin, with allow_pickle=True (CLI: --allow-pickle)")
        path = directory / manifest["pickle"]
        try:
            model = torch.load(path, weights_only=False, map_location="cpu")
        except Exception as exc:  # a damaged pickle fails in many ways
            raise _damaged(path, f"cannot be unpickled: {_first_line(exc)}") from None
        return model.eval()
    _check_widths_file(directory, manifest)
    path = directory / manifest["weights"]
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise _damaged(path, "is missing") from None
    except Exception as exc:  # truncated zip, flipped bytes, a foreign pickle: each raises its own type
        reason = f": {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else ""
        raise _damaged(path, f"is not a readable weights file ({type(exc).__name__}{reason})") from None
    if not isinstance(state, dict):
        raise _damaged(path, f"holds a {type(state).__name__}, not a state dict")
    model = rebuild(manifest, directory / MANIFEST)  # after the cheap checks: replaying pruning takes a while
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise _damaged(path, f"does not fit the model {MANIFEST} describes ({_first_line(exc)})") from None
    return model.eval()


def rebuild(manifest: dict, source: str | os.PathLike = MANIFEST) -> nn.Module:
    """The source model with every recorded pruning step replayed (weights not loaded).

    `source` names the manifest in messages when a recorded step cannot be replayed.
    """
    try:
        model = zoo.build(manifest["source"])
    except SlimdeployError as exc:
        raise SlimdeployError(f"{source}: its source model {manifest['source']!r} cannot be built here ({exc}); "
                              f"install what provides it, or if the file was damaged, {REMEDY}") from None
    steps = manifest.get("steps", [])
    if steps:
        example = torch.randn(*manifest["input_shape"])
        for number, step in enumerate(steps, 1):
            ignored = step.get("ignored", [])
            widths = Widths.from_json(step["widths"], source=f"{source} (pruning step {number})")
            try:
                model = prune(model, widths, example, importance=FirstChannels(),
                              analysis=analyse(model, example, ignored, plan=step.get("scopes")), ignored=ignored)
            except LimitExceeded as exc:
                raise SlimdeployError(f"{source}: replaying pruning step {number} ran past the analysis bound on this "
                                      f"machine ({exc}); raise SLIMDEPLOY_ANALYSIS_SECONDS or "
                                      f"SLIMDEPLOY_ANALYSIS_MEMORY_GB and load it again") from None
            except SlimdeployError as exc:
                raise _damaged(Path(source), f"records pruning step {number} that cannot be replayed ({exc})") from None
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


REMEDY = "re-create the directory (slimdeploy prune, or compress) or copy it again from where it was made"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _damaged(path: Path, what: str) -> SlimdeployError:
    """The error for a saved-model file that cannot be used: which file, what is wrong, what to do."""
    return SlimdeployError(f"{path} {what}; the saved model is damaged: {REMEDY}")


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise _damaged(path, "is not text (its bytes are not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise _damaged(path, f"is not valid JSON ({exc})") from None
    except OSError as exc:
        raise _damaged(path, f"cannot be read ({exc.strerror or exc})") from None


def _plain_name(value: object) -> bool:
    """A file name inside the directory (no separators, no '..'), as `save` writes."""
    return isinstance(value, str) and value not in ("", ".", "..") and Path(value).name == value and "\\" not in value


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.is_file():
        raise SlimdeployError(f"{directory} is not a slimdeploy model directory (no {MANIFEST}); give a directory "
                              f"written by `slimdeploy prune` or `compress`, or a model spec such as "
                              f"torchvision:resnet18")
    manifest = _read_json(path)
    if not isinstance(manifest, dict):
        raise _damaged(path, f"holds a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != MODEL_FORMAT:
        raise _damaged(path, f"has format {manifest.get('format')!r}, expected {MODEL_FORMAT!r}")
    manifest.setdefault("input_shape", None)
    shape = manifest["input_shape"]
    if shape is not None and not (isinstance(shape, list) and shape and all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise _damaged(path, f"has input_shape {shape!r}; expected a list of positive integers")
    if "pickle" in manifest:
        if not _plain_name(manifest["pickle"]):
            raise _damaged(path, f"names the pickle {manifest['pickle']!r}, not a file in the directory")
        return manifest
    if not isinstance(manifest.get("source"), str) or not manifest["source"]:
        raise _damaged(path, "names neither a source model nor a pickle")
    if not _plain_name(manifest.get("weights")):
        raise _damaged(path, f"names the weights {manifest.get('weights')!r}, not a file in the directory")
    steps = manifest.setdefault("steps", [])
    if not isinstance(steps, list) or not all(
            isinstance(step, dict) and isinstance(step.get("widths"), dict)
            and isinstance(step.get("ignored", []), list) and all(isinstance(i, str) for i in step.get("ignored", []))
            and isinstance(step.get("scopes", []), list) and all(isinstance(i, str) for i in step.get("scopes", []))
            for step in steps):
        raise _damaged(path, 'has malformed pruning steps; each must be {"widths": {...}, "ignored": [...], "scopes": [...]}')
    if steps and shape is None:
        raise _damaged(path, "records pruning steps but no input_shape to replay them with")
    return manifest


def _check_widths_file(directory: Path, manifest: dict) -> None:
    """widths.json, where present, must be readable and agree with the last recorded pruning step."""
    path = directory / "widths.json"
    if not manifest.get("steps") or not path.exists():
        return
    widths = Widths.from_json(_read_json(path), source=str(path))
    last = Widths.from_json(manifest["steps"][-1]["widths"], source=f"{directory / MANIFEST} (last pruning step)")
    if widths != last:
        raise _damaged(path, f"disagrees with the last pruning step recorded in {MANIFEST}")
