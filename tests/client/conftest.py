"""Fixtures for client tests."""

from __future__ import annotations

import pytest

from tests.client.scripted_broker import ScriptedBroker


@pytest.fixture
def scripted():
    """``scripted(steps, url=None)`` starts a ScriptedBroker; all are closed at the end."""
    brokers = []

    def make(script, url: str | None = None):
        brokers.append(ScriptedBroker(script, url))
        return brokers[-1]

    yield make
    for broker in brokers:
        broker.close()
