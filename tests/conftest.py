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
