"""Fixtures for the console's tests: a real broker per module, and the console app
over it in starlette's TestClient (HTTP without a socket, the app's real code)."""

from __future__ import annotations

import pytest

from tests.conftest import Broker


@pytest.fixture(scope="module")
def console_broker(ray_cluster, tmp_path_factory):
    """One broker for a module's console tests; topics keep tests apart."""
    broker = Broker(tmp_path_factory.mktemp("console"), ray_cluster, shards=2).start()
    yield broker
    broker.stop()


# The TestClient's own origin (its base URL): what a browser on a console page sends
# as the Origin of that page's forms.
OWN_ORIGIN = "http://testserver"


def console_client(broker_url: str, origin: str | None = OWN_ORIGIN,
                   request_timeout_ms: int = 10_000):
    """A TestClient of the console's app (create_app) on ``broker_url``, to use in a
    ``with``; server errors become 500 pages (as a browser sees them), not exceptions
    in the test. Every request says it comes from ``origin`` (None: no Origin
    header, as a client that is not a browser sends none). ``request_timeout_ms``: how
    long it waits for each answer of the broker's."""
    from starlette.testclient import TestClient

    from plinth.client.console.app import create_app
    from plinth.client.console.config import ConsoleConfig

    app = create_app(ConsoleConfig(broker=broker_url, sample_interval_s=0.2,
                                   request_timeout_ms=request_timeout_ms))
    return TestClient(app, raise_server_exceptions=False,
                      headers={"Origin": origin} if origin else None)


@pytest.fixture(scope="module")
def console(console_broker):
    """A TestClient of the console app on ``console_broker``."""
    with console_client(console_broker.url) as client:
        yield client


@pytest.fixture(scope="module")
def admin(console_broker):
    from plinth import Admin

    with Admin(broker=console_broker.url, request_timeout_ms=10_000) as admin:
        yield admin
