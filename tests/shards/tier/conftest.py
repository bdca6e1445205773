"""Fixtures of the tier tests: one remote store of each kind the broker supports."""

from __future__ import annotations

import socket

import pytest

from plinth import limits
from plinth.shards.tier.remote_store import open_remote_store
from tests.shards.tier.tiered_shard import TieredShard


@pytest.fixture(autouse=True)
def file_store_directory(tmp_path):
    """``tmp_path / "store"``, made: the tests' file:// stores are there, and Plinth
    never creates a file:// store's directory itself (remote_store.py)."""
    directory = tmp_path / "store"
    directory.mkdir(exist_ok=True)
    return directory


# Each remote wait's limit, and the fixture a test asks for to keep its real value.
_REMOTE_WAITS_REAL = {"REMOTE_FETCH_WAIT_MS_MAX": "real_remote_fetch_wait",
                      "REMOTE_TIME_LOOKUP_WAIT_MS_MAX": "real_remote_time_lookup_wait"}


@pytest.fixture(autouse=True)
def remote_waits_long(request, monkeypatch):
    """A remote fetch and a look-up by time wait up to 30 s for their reads here
    (REMOTE_FETCH_WAIT_MS_MAX, REMOTE_TIME_LOOKUP_WAIT_MS_MAX), unless the test asks
    for the real bound (``real_remote_fetch_wait``, ``real_remote_time_lookup_wait``):
    the tests whose subject is a read's data, record or error must get it, and on two
    loaded cores a store's immediate error once came back to the loop after the
    500 ms, answered empty instead (CI, session 43). The shards under test run in this
    process."""
    for limit, real in _REMOTE_WAITS_REAL.items():
        if real not in request.fixturenames:
            monkeypatch.setattr(limits, limit, 30_000)


@pytest.fixture
def real_remote_fetch_wait():
    """The real REMOTE_FETCH_WAIT_MS_MAX, for the tests of the bound itself."""
    return limits.REMOTE_FETCH_WAIT_MS_MAX


@pytest.fixture
def real_remote_time_lookup_wait():
    """The real REMOTE_TIME_LOOKUP_WAIT_MS_MAX, for the tests of the bound itself."""
    return limits.REMOTE_TIME_LOOKUP_WAIT_MS_MAX


@pytest.fixture(params=["memory", "file", "s3"])
def store(request, tmp_path, monkeypatch):
    """An empty store: in memory, on the local disk, or a bucket of a real S3 API
    (moto's server on 127.0.0.1, started once per session)."""
    if request.param == "memory":
        return open_remote_store("memory://")
    if request.param == "file":
        return open_remote_store(f"file://{tmp_path}/store")
    return request.getfixturevalue("moto_s3").store(monkeypatch)


@pytest.fixture
def s3_url(moto_s3, monkeypatch):
    """``s3://bucket/prefix`` of an empty prefix of the session's moto server, its
    environment set for the test (the shard under test opens the store itself)."""
    for key, value in moto_s3.env.items():
        monkeypatch.setenv(key, value)
    return moto_s3.url()


@pytest.fixture(params=["file", "s3"])
def tier_url(request, tmp_path):
    """A URL of an empty store a shard uploads to and reads from: a local directory,
    or a prefix of moto's S3."""
    if request.param == "file":
        return f"file://{tmp_path}/store"
    return request.getfixturevalue("s3_url")


@pytest.fixture
def stopped_moto(monkeypatch):
    """(a MotoS3 server of this test's own, stopped, its environment set for the test;
    the ``s3://`` URL of a bucket on it): a store that is down until the test calls
    ``start()``. Stopped again at the end."""
    from tests.moto_s3 import MotoS3

    moto = MotoS3().start()
    try:
        for key, value in moto.env.items():
            monkeypatch.setenv(key, value)
        url = moto.url()
    finally:
        moto.stop()
    yield moto, url
    moto.stop()


@pytest.fixture
def black_hole():
    """A port on 127.0.0.1 that takes connections and never answers (a store that hangs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def shard_at(tmp_path):
    """``shard_at(url)``: a TieredShard (tiered_shard.py) on that store; closed at the end."""
    shards = []

    def make(url: str) -> TieredShard:
        shards.append(TieredShard(tmp_path / "shard", url))
        return shards[-1]
    yield make
    for shard in shards:
        shard.close()
