"""Dataset factories for the benchmarks (`--data bench_data:NAME`, with benchmarks/ on sys.path).

Fashion-MNIST comes from the Debian package `dataset-fashion-mnist` (`make data`, or
`apt-get install dataset-fashion-mnist`). Training subsets are fixed (the same images for every
seed and method); the validation set is the official 10 000-image test split.
"""
from __future__ import annotations

import torch
from torch.utils.data import Subset

from slimdeploy.data import load_dataset

SUBSET_SEED = 1234


def _fashion(size: int | None, input_shape, normalize: str = "dataset"):
    train, val, info = load_dataset("fashion-mnist", input_shape=input_shape, normalize=normalize)
    if size and size < len(train):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SUBSET_SEED))[:size]
        train = Subset(train, sorted(order.tolist()))
    return train, val, {**info, "name": f"fashion-mnist{'' if not size else f'-{size // 1000}k'}",
                        "n_train": len(train)}


def fashion_10k(input_shape=None, seed=0):
    """10 000 training images of Fashion-MNIST, the official test split for validation."""
    return _fashion(10_000, input_shape)


def fashion_20k(input_shape=None, seed=0):
    return _fashion(20_000, input_shape)


def fashion_10k_imagenet(input_shape=None, seed=0):
    """As fashion_10k, normalized with ImageNet statistics (for ImageNet-pretrained models)."""
    return _fashion(10_000, input_shape, "imagenet")
