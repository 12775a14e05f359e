"""Every test gets its own latency database, never the user's cache."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_latency_db(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SLIMDEPLOY_DB", str(tmp_path_factory.mktemp("latency-db") / "latency.sqlite"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine train several times faster on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
