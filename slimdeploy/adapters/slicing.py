"""Select channels of a layer by index, in any order, with `None` for a new all-zero channel.

torch-pruning only removes channels. Structures whose channels travel through a fixed shuffle
(ShuffleNetV2) also need to reorder them and, where a kept channel reaches a consumer it did not
feed before, to give it a zero weight there; these helpers do both.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

Index = Sequence["int | None"]


def take(tensor: torch.Tensor, index: Index, dim: int, fill: float = 0.0) -> torch.Tensor:
    """`tensor` indexed along `dim` by `index`; positions given as None hold `fill`."""
    picks = torch.tensor([0 if i is None else i for i in index], dtype=torch.long, device=tensor.device)
    out = tensor.detach().index_select(dim, picks).clone()
    new = [p for p, i in enumerate(index) if i is None]
    if new:
        out.index_fill_(dim, torch.tensor(new, dtype=torch.long, device=tensor.device), fill)
    return out


def parameter(param: nn.Parameter, index: Index, dim: int, fill: float = 0.0) -> nn.Parameter:
    """A new parameter holding `take(param, ...)`, with its gradient selected alike."""
    new = nn.Parameter(take(param, index, dim, fill), requires_grad=param.requires_grad)
    if param.grad is not None:
        new.grad = take(param.grad, index, dim)
    return new


def conv_out(conv: nn.modules.conv._ConvNd, index: Index) -> None:
    """Keep the output channels `index` of a (non-grouped) convolution."""
    conv.weight = parameter(conv.weight, index, 0)
    if conv.bias is not None:
        conv.bias = parameter(conv.bias, index, 0)
    conv.out_channels = len(index)


def conv_in(conv: nn.modules.conv._ConvNd, index: Index) -> None:
    """Keep the input channels `index` of a non-grouped convolution."""
    if conv.groups != 1:
        raise ValueError("conv_in handles ungrouped convolutions; use depthwise() for depthwise ones")
    conv.weight = parameter(conv.weight, index, 1)
    conv.in_channels = len(index)


def grouped_in(conv: nn.modules.conv._ConvNd, positions: Sequence[int]) -> None:
    """Keep the input `positions` within every group of a grouped convolution."""
    conv.weight = parameter(conv.weight, positions, 1)
    conv.in_channels = len(positions) * conv.groups


def depthwise(conv: nn.modules.conv._ConvNd, index: Index) -> None:
    """Keep the channels `index` of a depthwise convolution (input, output and groups together)."""
    conv_out(conv, index)
    conv.in_channels = conv.groups = len(index)


def linear_out(linear: nn.Linear, index: Index) -> None:
    linear.weight = parameter(linear.weight, index, 0)
    if linear.bias is not None:
        linear.bias = parameter(linear.bias, index, 0)
    linear.out_features = len(index)


def linear_in(linear: nn.Linear, index: Index) -> None:
    linear.weight = parameter(linear.weight, index, 1)
    linear.in_features = len(index)


def norm(layer: nn.Module, index: Index) -> None:
    """Keep the channels `index` of a BatchNorm or LayerNorm (a new channel: weight 0, bias 0)."""
    if getattr(layer, "weight", None) is not None:
        layer.weight = parameter(layer.weight, index, 0)
    if getattr(layer, "bias", None) is not None:
        layer.bias = parameter(layer.bias, index, 0)
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        if layer.running_mean is not None:
            layer.running_mean = take(layer.running_mean, index, 0)
            layer.running_var = take(layer.running_var, index, 0, fill=1.0)
        layer.num_features = len(index)
    elif isinstance(layer, nn.LayerNorm):
        layer.normalized_shape = (len(index),)
    else:
        raise TypeError(f"cannot select channels of {type(layer).__name__}")


def keep_except(n: int, removed: Sequence[int]) -> list[int]:
    """0..n-1 without `removed`, in order."""
    gone = set(int(i) for i in removed)
    return [i for i in range(n) if i not in gone]
