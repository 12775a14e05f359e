"""slimdeploy.data on the real bundled datasets (digits, mnist5k) and self-written idx files."""
from __future__ import annotations

import gzip
import os
import struct
import sys
import textwrap

import numpy as np
import pytest
import torch

from slimdeploy.data import (
    FASHION_MNIST_DIR,
    load_dataset,
    make_loader,
    read_idx,
    stratified_split,
)
from slimdeploy.errors import SlimdeployError


def _labels(dataset) -> np.ndarray:
    return dataset.targets.numpy()


def test_digits_sizes_classes_and_values():
    train, val, info = load_dataset("digits", normalize="none")
    assert info["name"] == "digits" and info["num_classes"] == 10
    assert len(train) + len(val) == 1797
    assert info["n_train"] == len(train) and info["n_val"] == len(val)
    assert len(val) == pytest.approx(0.2 * 1797, abs=10)
    assert "load_digits" in info["source"]
    image, label = train[0]
    assert image.dtype == torch.float32 and image.shape == (1, 8, 8)
    assert isinstance(label, int) and 0 <= label < 10
    assert float(train.images.min()) == 0.0 and float(train.images.max()) == 1.0
    # stratified: every class keeps about a fifth of its images in validation
    counts = np.bincount(_labels(val), minlength=10) / np.bincount(
        np.concatenate([_labels(train), _labels(val)]), minlength=10)
    assert np.all(np.abs(counts - 0.2) < 0.02)


def test_default_normalization_standardizes_with_train_stats():
    train, val, info = load_dataset("digits")
    batch = torch.stack([train[i][0] for i in range(len(train))])
    assert abs(float(batch.mean())) < 1e-3 and float(batch.std()) == pytest.approx(1.0, abs=1e-3)
    assert info["normalize"] == "dataset" and len(info["mean"]) == 1 and 0 < info["std"][0] < 1


def test_split_is_deterministic_under_a_seed():
    a_train, a_val, _ = load_dataset("digits", seed=3)
    b_train, b_val, _ = load_dataset("digits", seed=3)
    c_train, _, _ = load_dataset("digits", seed=4)
    assert torch.equal(a_train.images, b_train.images) and torch.equal(a_val.labels, b_val.labels)
    assert not torch.equal(a_train.images, c_train.images)
    train_idx, val_idx = stratified_split(np.repeat(np.arange(3), 10), 0.3, seed=1)
    assert len(val_idx) == 9 and not set(train_idx) & set(val_idx)
    assert np.array_equal(val_idx, stratified_split(np.repeat(np.arange(3), 10), 0.3, seed=1)[1])


def test_mnist5k_sizes_classes_and_values():
    train, val, info = load_dataset("mnist5k", normalize="none")
    assert (len(train), len(val), info["num_classes"]) == (4000, 1000, 10)
    assert np.array_equal(np.bincount(_labels(val)), np.full(10, 100))
    assert info["source"].endswith("mnist_5k.csv.gz") and os.path.isfile(info["source"])
    image, label = val[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert float(train.images.min()) == 0.0 and float(train.images.max()) == 1.0
    # real handwriting: mostly background, some ink
    assert 0.05 < float(train.images.mean()) < 0.25


def test_resize_to_model_input_shape():
    train, val, info = load_dataset("mnist5k", input_shape=(1, 3, 32, 32))
    image, _ = train[5]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    assert info["image_shape"] == (3, 32, 32) and len(info["mean"]) == 3
    images, labels = next(iter(make_loader(val, batch_size=16)))
    assert images.shape == (16, 3, 32, 32) and labels.dtype == torch.int64
    # upsampling the 8x8 digits keeps the same picture, one gray channel when C is 1
    small, _, _ = load_dataset("digits", input_shape=(1, 16, 16), normalize="none")
    assert small[0][0].shape == (1, 16, 16) and 0.0 <= float(small[0][0].min()) <= float(small[0][0].max()) <= 1.0
    with pytest.raises(SlimdeployError, match="channels"):
        load_dataset("digits", input_shape=(1, 2, 8, 8))


def test_make_loader_shuffles_reproducibly():
    train, _, _ = load_dataset("digits")
    first = [labels for _, labels in make_loader(train, 100, shuffle=True, seed=7)]
    again = [labels for _, labels in make_loader(train, 100, shuffle=True, seed=7)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert sum(len(b) for b in first) == len(train)
    assert make_loader(train, 8).num_workers == 0


def _write_idx(path, array: np.ndarray, code: int, big_endian_dtype: str) -> None:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(big_endian_dtype).tobytes())


def test_idx_parser_on_self_written_files(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "images.gz", images, 0x08, ">u1")
    assert np.array_equal(read_idx(tmp_path / "images.gz"), images)
    ints = np.array([1, -2, 70000], dtype=np.int32)
    _write_idx(tmp_path / "ints.gz", ints, 0x0C, ">i4")
    assert np.array_equal(read_idx(tmp_path / "ints.gz"), ints)

    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(SlimdeployError, match="magic"):
        read_idx(tmp_path / "bad")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 0x08, 1, 10) + b"\x00" * 3)
    with pytest.raises(SlimdeployError, match="bytes follow"):
        read_idx(tmp_path / "short.gz")


def test_fashion_mnist_from_a_directory_of_idx_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz",
                   rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), 0x08, ">u1")
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10, 0x08, ">u1")
    monkeypatch.setenv("SLIMDEPLOY_FASHION_MNIST_DIR", str(tmp_path))
    train, val, info = load_dataset("fashion-mnist", input_shape=(1, 3, 32, 32))
    assert (len(train), len(val), info["num_classes"]) == (30, 10, 10)
    assert train[0][0].shape == (3, 32, 32) and info["classes"][9] == "ankle boot"


def test_fashion_mnist_missing_names_the_package_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMDEPLOY_FASHION_MNIST_DIR", str(tmp_path))  # empty, whatever the machine has
    with pytest.raises(SlimdeployError) as error:
        load_dataset("fashion-mnist")
    message = str(error.value)
    assert "dataset-fashion-mnist" in message and str(tmp_path) in message
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert "\n" not in message


@pytest.mark.skipif(not os.path.isfile(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")),
                    reason=f"the Debian package dataset-fashion-mnist is not installed ({FASHION_MNIST_DIR}); "
                           f"`make data` installs it")
def test_the_installed_fashion_mnist_package_has_the_official_split(monkeypatch):
    monkeypatch.delenv("SLIMDEPLOY_FASHION_MNIST_DIR", raising=False)
    train, val, info = load_dataset("fashion-mnist")
    assert (len(train), len(val), info["num_classes"]) == (60000, 10000, 10)


FACTORY_MODULE = textwrap.dedent("""
    import torch
    from torch.utils.data import TensorDataset

    def _make(n, seed):
        g = torch.Generator().manual_seed(seed)
        return TensorDataset(torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 4)

    def good():
        return _make(12, 0), _make(4, 1)

    def with_args(input_shape=None, seed=0):
        size = tuple(input_shape[-2:]) if input_shape else (8, 8)
        data = TensorDataset(torch.zeros(6, 1, *size), torch.tensor([0, 1, 2, 0, 1, 2]))
        return data, data, {"num_classes": 3, "seed_seen": seed}

    def single():
        return _make(3, 0)

    def broken():
        raise RuntimeError("disk on fire")

    NOT_CALLABLE = 3
""")


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "sd_test_factories.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "sd_test_factories"
    sys.modules.pop("sd_test_factories", None)


def test_factory_spec(factory_module):
    train, val, info = load_dataset(f"{factory_module}:good")
    assert (len(train), len(val), info["n_train"], info["n_val"]) == (12, 4, 12, 4)
    assert info["num_classes"] == 4 and info["source"] == f"{factory_module}:good"
    train, _, info = load_dataset(f"{factory_module}:with_args", input_shape=(1, 1, 16, 16), seed=5)
    assert train[0][0].shape == (1, 16, 16)
    assert info["num_classes"] == 3 and info["seed_seen"] == 5


@pytest.mark.parametrize("attr, match", [
    ("single", "must return"),
    ("broken", "disk on fire"),
    ("missing", "no attribute 'missing'"),
    ("NOT_CALLABLE", "non-callable"),
])
def test_factory_spec_errors(factory_module, attr, match):
    with pytest.raises(SlimdeployError, match=match):
        load_dataset(f"{factory_module}:{attr}")


def test_factory_import_failure_and_unknown_spec():
    with pytest.raises(SlimdeployError, match="cannot import no_such_pkg_xyz.data"):
        load_dataset("no_such_pkg_xyz.data:make")
    with pytest.raises(SlimdeployError, match="form 'package.module:factory'"):
        load_dataset("bad spec:")
    with pytest.raises(SlimdeployError) as error:
        load_dataset("cifar10")
    message = str(error.value)
    for name in ("digits", "mnist5k", "fashion-mnist", "package.module:factory"):
        assert name in message
