"""Model specs → fresh `nn.Module`s: `torchvision:NAME`, `timm:NAME`, `package.module:factory`.

`torchvision:NAME` covers every torchvision family (classification, segmentation, detection,
video) with random weights (`weights=None`, and `weights_backbone=None` where a backbone would
otherwise be downloaded); `timm:NAME` is `timm.create_model(NAME, pretrained=False)`.
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
# Per torchvision family: the input shape used when none is given (detection models take images
# at the size given: their own transform's resize is not part of what slimdeploy traces/exports).
_FAMILY_SHAPES = {"detection": (1, 3, 320, 320), "video": (1, 3, 16, 112, 112), "optical_flow": None}


def build(spec: str) -> nn.Module:
    """Build the model a spec names (random weights)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise SlimdeployError(
            f"unknown model {spec!r}: use torchvision:NAME (e.g. torchvision:resnet18), timm:NAME, "
            f"package.module:factory, or a directory written by slimdeploy")
    kind, name = spec.split(":", 1)
    if kind == "torchvision":
        model = _torchvision(name)
    elif kind == "timm":
        model = _timm(name)
    else:
        model = _factory(kind, name)
    if not isinstance(model, nn.Module):
        raise SlimdeployError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    setattr(model, META, {"source": spec})
    return model


def default_input_shape(spec: str | None) -> tuple[int, ...] | None:
    """The input shape used when none is given: 1×3×224×224 for torchvision and timm image models
    (timm: the model's own default size; torchvision detection 320², video 16 frames of 112²)."""
    if spec in _INPUT_SHAPES:
        return _INPUT_SHAPES[spec]
    if spec and spec.startswith("torchvision:"):
        family = _torchvision_family(spec.split(":", 1)[1])
        return _FAMILY_SHAPES.get(family, DEFAULT_IMAGE_SHAPE)
    if spec and spec.startswith("timm:"):
        try:
            import timm

            config = timm.get_pretrained_cfg(spec.split(":", 1)[1])
            return (1, *config.input_size) if config is not None else DEFAULT_IMAGE_SHAPE
        except Exception:  # an unknown name fails later, in build(), with its own message
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


def _torchvision_family(name: str) -> str | None:
    """'classification', 'segmentation', 'detection', 'video', ... or None for an unknown name."""
    import torchvision

    if name in torchvision.models.list_models(module=torchvision.models):
        return "classification"
    for family in ("segmentation", "detection", "video", "optical_flow", "quantization"):
        module = getattr(torchvision.models, family, None)
        if module is not None and name in torchvision.models.list_models(module=module):
            return family
    return None


def _torchvision(name: str) -> nn.Module:
    import torchvision

    family = _torchvision_family(name)
    if family is None:
        names = sorted(torchvision.models.list_models())
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see torchvision.models.list_models()"
        raise SlimdeployError(f"unknown torchvision model {name!r}{hint}")
    if family in ("segmentation", "detection"):
        return torchvision.models.get_model(name, weights=None, weights_backbone=None)
    return torchvision.models.get_model(name, weights=None)


def _timm(name: str) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise SlimdeployError(f"timm:{name} needs timm: pip install timm") from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise SlimdeployError(f"unknown timm model {name!r}{hint}")
    return timm.create_model(name, pretrained=False)


def _factory(module_name: str, attr: str) -> nn.Module:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SlimdeployError(f"cannot import {module_name!r} for model {module_name}:{attr}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SlimdeployError(f"{module_name} has no callable {attr!r} (model spec {module_name}:{attr})")
    return factory()
