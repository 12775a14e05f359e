"""Every test gets its own latency database, never the user's cache."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_latency_db(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SLIMDEPLOY_DB", str(tmp_path_factory.mktemp("latency-db") / "latency.sqlite"))
