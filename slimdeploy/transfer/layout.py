"""Where each channel group sits in a model: (stage, block, slot), found from the module tree.

A *block* is a child of a `nn.Sequential` or `nn.ModuleList` that holds convolutions or linear
layers and is neither one itself nor a list of blocks (torchvision's EfficientNet and RegNet keep
each stage in a `Sequential` of blocks); consecutive blocks of the same class form a *run*. A run splits
into *stages* at every block that changes the shape of what flows through it (a stride or a
width change), so a stage is a leading block followed by shape-preserving blocks, the ones a
shallower proxy may drop. This finds the stages of torchvision ResNets and MobileNets,
EfficientNet-Lite and `slimdeploy.models.CifarResNet` without knowing any of them.

A group's position is taken from its name (the module path of its earliest producing layer):
inside block b of stage s it is (s, b, path within the block); elsewhere (stem, head, a stage
width tied to the stem) it is the path itself. Widths tied across a stage's blocks are named in
its first block, so they map stage to stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

from ..analysis import ROOT_TYPES
from ..space import WidthSpace

CONTAINERS = (nn.Sequential, nn.ModuleList)


@dataclass(frozen=True)
class Stage:
    """Blocks in one container that repeat a block: module paths, and which ones keep the shape."""

    container: str
    blocks: tuple[str, ...]
    preserving: tuple[bool, ...]
    block_class: str

    def to_json(self) -> dict:
        return {"container": self.container, "blocks": list(self.blocks), "class": self.block_class}


@dataclass(frozen=True)
class Position:
    """A group's place: stage index, block index within the stage and slot path; or outside any stage."""

    stage: int | None
    block: int | None
    slot: str

    @property
    def outside(self) -> bool:
        return self.stage is None

    def __str__(self) -> str:
        return self.slot if self.outside else f"stage {self.stage} block {self.block} {self.slot}"


@dataclass(frozen=True)
class Layout:
    """A model's stages and the position of each of its channel groups."""

    stages: tuple[Stage, ...]
    positions: dict[str, Position]

    @classmethod
    def of(cls, model: nn.Module, example: torch.Tensor, space: WidthSpace) -> "Layout":
        stages = tuple(find_stages(model, example))
        return cls(stages, {g.name: position(g.name, stages) for g in space})

    def depth(self, stage: int) -> int:
        return len(self.stages[stage].blocks)

    def to_json(self) -> dict:
        return {"stages": [s.to_json() for s in self.stages],
                "positions": {name: str(p) for name, p in self.positions.items()}}


def position(name: str, stages: tuple[Stage, ...]) -> Position:
    """Where the group named `name` sits among `stages`."""
    for s, stage in enumerate(stages):
        for b, block in enumerate(stage.blocks):
            if name.startswith(block + "."):
                return Position(s, b, name[len(block) + 1:])
    return Position(None, None, name)


def find_stages(model: nn.Module, example: torch.Tensor) -> list[Stage]:
    """Every stage of `model` in module order (a forward pass on `example` gives the blocks' shapes)."""
    runs = list(_runs(model, ""))
    shapes = _block_shapes(model, example, {path for _, run in runs for path, _ in run})
    stages = []
    for container, run in runs:
        current: list[str] = []
        keeps: list[bool] = []
        for path, block in run:
            if path not in shapes:  # never called: not part of the network's flow
                continue
            preserving = shapes[path][0] == shapes[path][1]
            if current and not preserving:
                stages.append(Stage(container, tuple(current), tuple(keeps), _class_name(run[0][1])))
                current, keeps = [], []
            current.append(path)
            keeps.append(preserving)
        if current:
            stages.append(Stage(container, tuple(current), tuple(keeps), _class_name(run[0][1])))
    return stages


def _class_name(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _has_layers(module: nn.Module) -> bool:
    return (not isinstance(module, ROOT_TYPES) and any(True for _ in module.children())
            and any(isinstance(m, ROOT_TYPES) for m in module.modules()))


def _is_block(module: nn.Module) -> bool:
    """Holds layers and is not itself a list of blocks (a `Sequential` of convs and norms is a block)."""
    return _has_layers(module) and not (isinstance(module, CONTAINERS)
                                        and any(_has_layers(child) for child in module.children()))


def _runs(module: nn.Module, path: str) -> Iterator[tuple[str, list[tuple[str, nn.Module]]]]:
    """(container path, consecutive same-class blocks) in module order, not looking inside blocks."""
    run: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        block = isinstance(module, CONTAINERS) and _is_block(child)
        if run and not (block and type(run[-1][1]) is type(child)):
            yield path, run
            run = []
        if block:
            run.append((_join(path, name), child))
        else:
            yield from _runs(child, _join(path, name))
    if run:
        yield path, run


def _block_shapes(model: nn.Module, example: torch.Tensor, paths: set[str]) -> dict[str, tuple]:
    """Input and output shape of each block's first call (None for a non-tensor output)."""
    shapes: dict[str, tuple] = {}
    hooks = []
    for name, module in model.named_modules():
        if name in paths:
            def hook(mod, args, output, name=name):
                if name not in shapes:
                    first = args[0] if args and isinstance(args[0], torch.Tensor) else None
                    shapes[name] = (tuple(first.shape) if first is not None else None,
                                    tuple(output.shape) if isinstance(output, torch.Tensor) else ())
            hooks.append(module.register_forward_hook(hook))
    try:
        run_eval(model, example)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def run_eval(model: nn.Module, example: torch.Tensor):
    """One forward pass in eval mode without gradients; the model's training mode is restored."""
    was_training = model.training
    try:
        with torch.no_grad():
            return model.eval()(example)
    finally:
        model.train(was_training)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name
