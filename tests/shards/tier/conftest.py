"""Fixtures of the tier tests: one remote store of each kind the broker supports."""

from __future__ import annotations

import pytest

from plinth.shards.tier.remote_store import open_remote_store


@pytest.fixture(params=["memory", "file", "s3"])
def store(request, tmp_path, monkeypatch):
    """An empty store: in memory, on the local disk, or a bucket of a real S3 API
    (moto's server on 127.0.0.1, started once per session)."""
    if request.param == "memory":
        return open_remote_store("memory://")
    if request.param == "file":
        return open_remote_store(f"file://{tmp_path}/store")
    return request.getfixturevalue("moto_s3").store(monkeypatch)
