"""Tests see neither the user's settings nor the machine's data: every test gets its own latency
database and an empty Fashion-MNIST folder, and no SLIMDEPLOY_* variable from the environment
(some are read when slimdeploy is imported, so they are cleared here, before any test module)."""
from __future__ import annotations

import os

import pytest

for _name in [n for n in os.environ if n.startswith("SLIMDEPLOY_")]:
    del os.environ[_name]


@pytest.fixture(autouse=True)
def _private_settings(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SLIMDEPLOY_DB", str(tmp_path_factory.mktemp("latency-db") / "latency.sqlite"))
    monkeypatch.setenv("SLIMDEPLOY_FASHION_MNIST_DIR", str(tmp_path_factory.mktemp("no-fashion-mnist")))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine train several times faster on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
