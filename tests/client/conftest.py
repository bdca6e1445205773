"""Fixtures for client tests."""

from __future__ import annotations

import pytest

from tests.client.scripted_broker import ScriptedBroker


@pytest.fixture
def scripted():
    """``scripted(steps)`` starts a ScriptedBroker; all are closed at the end."""
    brokers = []

    def make(script):
        brokers.append(ScriptedBroker(script))
        return brokers[-1]

    yield make
    for broker in brokers:
        broker.close()
