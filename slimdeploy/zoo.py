"""Model specs → fresh `nn.Module`s: `torchvision:NAME`, `package.module:factory`, built-in names.

A model built here carries its spec (in the `_slimdeploy` attribute), so a pruned copy can be
saved as a recipe (spec + widths + weights) and loaded without unpickling code.
"""
from __future__ import annotations

import difflib
import importlib

import torch.nn as nn

from .errors import SlimdeployError

META = "_slimdeploy"
DEFAULT_IMAGE_SHAPE = (1, 3, 224, 224)
_INPUT_SHAPES = {"torchvision:inception_v3": (1, 3, 299, 299)}


def build(spec: str) -> nn.Module:
    """Build the model a spec names (torchvision models with random weights: weights=None)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise SlimdeployError(
            f"unknown model {spec!r}: use torchvision:NAME (e.g. torchvision:resnet18), "
            f"package.module:factory, or a directory written by slimdeploy")
    kind, name = spec.split(":", 1)
    model = _torchvision(name) if kind == "torchvision" else _factory(kind, name)
    if not isinstance(model, nn.Module):
        raise SlimdeployError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    setattr(model, META, {"source": spec})
    return model


def default_input_shape(spec: str | None) -> tuple[int, ...] | None:
    """The input shape used when none is given: 1×3×224×224 for torchvision classifiers."""
    if spec in _INPUT_SHAPES:
        return _INPUT_SHAPES[spec]
    if spec and spec.startswith("torchvision:"):
        return DEFAULT_IMAGE_SHAPE
    return None


def parse_input_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' → (1, 3, 224, 224), with a clear error for anything else."""
    try:
        shape = tuple(int(part) for part in str(text).replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) < 2 or any(d <= 0 for d in shape):
        raise SlimdeployError(f"bad input shape {text!r}: give positive integers separated by commas, "
                              f"e.g. 1,3,224,224 (batch, channels, height, width)")
    return shape


def torchvision_classifiers() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _torchvision(name: str) -> nn.Module:
    import torchvision

    names = torchvision_classifiers()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see torchvision.models.list_models()"
        raise SlimdeployError(f"unknown torchvision model {name!r}{hint}")
    return torchvision.models.get_model(name, weights=None)


def _factory(module_name: str, attr: str) -> nn.Module:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SlimdeployError(f"cannot import {module_name!r} for model {module_name}:{attr}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SlimdeployError(f"{module_name} has no callable {attr!r} (model spec {module_name}:{attr})")
    return factory()
