"""Fixtures of the CLI's tests."""

from __future__ import annotations

import contextlib

import pytest

from plinth import cli, protocol


@pytest.fixture
def log_start_0_end_200(monkeypatch):
    """The CLI's admin says every partition holds offsets 0..199 (the answer to
    ``plinth consume --offset``'s range check), whatever broker the consumer reads."""
    class Admin:
        def list_offsets(self, topic, partition):
            return protocol.PartitionInfo(partition, "shard-0", start_offset=0, end_offset=200)

    monkeypatch.setattr(cli, "_admin", lambda ctx: contextlib.nullcontext(Admin()))
